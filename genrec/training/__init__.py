"""Training: recipe schemas, the run, the model with its item vocabulary and auxiliary heads, the Trainer."""
