"""Data ingestion: readers per source format, the canonical dataset, the split, embedded fetches."""
