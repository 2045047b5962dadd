"""`genrec train` refuses bad input with one clear message and exit status 2 (no traceback).

Run directories for the resume / overwrite cases are laid out by hand (a config.yaml and an
empty ``checkpoints/checkpoint-N``), so the refusals are checked without training anything.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from genrec.cli import main as cli
from genrec.config import load_config, to_dict
from genrec.data.dataset import Dataset, Item
from genrec.errors import ConfigError, DataError
from genrec.item_tokenizer.artifact import item_codes
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.config import TokenizerConfig
from genrec.testing import make_tiny_llm
from genrec.training.config import TrainConfig
from genrec.training.recipe import check_resume
from tests.training.test_train import _args, _recipe, setup  # noqa: F401  (fixture)


def _fails(capsys, argv, *needles):
    """Run the CLI, expect exit 2 and one ``error:`` line containing every needle."""
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # progress bars share stderr (carriage returns), so look for the message anywhere
    lines = [line[line.index("error: "):] for line in err.replace("\r", "\n").splitlines() if "error: " in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _swap(argv, key, value):
    """Replace the ``key=...`` override in ``argv``."""
    i = next(i for i, a in enumerate(argv) if a.startswith(f"{key}="))
    return [*argv[:i], f"{key}={value}", *argv[i + 1:]]


def _fake_run(root, base, name, *overrides, checkpoint=True, readme=False):
    """A run directory as a started (or finished) run leaves it, without training."""
    argv = _args(root, base, name, *overrides)
    cfg = load_config(TrainConfig, root / "recipe.yaml", argv[3:])
    run = cfg.run_dir
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if checkpoint:
        (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    if readme:
        (run / "README.md").write_text("# finished\n")
    return argv


# (1) item tokenizer / dataset mismatch ---------------------------------------------------------

def test_tokenizer_built_on_another_dataset(setup, capsys, tmp_path):  # noqa: F811
    root, base = setup
    _recipe(root)
    other = Dataset(items=[Item(item_id=f"x{i}", title=f"other film {i}") for i in range(24)],
                    users=[f"u{u}" for u in range(30)],
                    sequences=[np.asarray([(u + 2 * t) % 24 for t in range(6)]) for u in range(30)],
                    stats={"users": 30, "items": 24, "interactions": 180})
    other.save(tmp_path / "other")
    argv = _swap(_args(root, base, "mismatch"), "data", tmp_path / "other")
    _fails(capsys, argv, "changed since tokenizer", "sha256 mismatch", "rebuild the tokenizer")
    assert not (root / "runs" / "mismatch").exists()


def test_dataset_items_without_codes():
    itok = SimpleNamespace(path="tokenizers_out/x", item_tokens={"a": ["<s0_0>", "<b0_0>"]})
    ds = SimpleNamespace(items=[Item(item_id="a"), Item(item_id="b"), Item(item_id="c")])
    with pytest.raises(DataError, match=r"2 dataset item\(s\) have no codes in tokenizers_out/x \(e.g. \['b', 'c'\]\)"):
        item_codes(itok, ds)


# (2) base tokenizer already holding item tokens ------------------------------------------------

def test_base_tokenizer_with_conflicting_tokens(setup, capsys, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    root, _ = setup
    _recipe(root)
    base = make_tiny_llm(tmp_path / "clash")
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_tokens(["<s0_1>", "<b1_2>"])
    tok.save_pretrained(base)
    _fails(capsys, _args(root, base, "clash"), "the base model's tokenizer already has 2 of the item tokens",
           "<s0_1>")


# (3) --resume with a changed config ------------------------------------------------------------

def test_resume_with_changed_config_names_the_keys(setup, capsys):  # noqa: F811
    root, base = setup
    _recipe(root)
    argv = _fake_run(root, base, "changed")
    line = _fails(capsys, [*argv, "training.learning_rate=0.5", "losses.temperature=0.2", "--resume"],
                  "cannot resume", "config changed", "losses.temperature, training.learning_rate")
    assert "name=..." in line


def test_resume_check_accepts_the_same_config(setup):  # noqa: F811
    root, base = setup
    _recipe(root)
    argv = _fake_run(root, base, "same", "training.max_steps=3")
    cfg = load_config(TrainConfig, root / "recipe.yaml", argv[3:])
    check_resume(cfg.run_dir, cfg)  # no error
    cfg.losses.weights["reconstruction_codes"] = 0.0
    with pytest.raises(ConfigError, match=r"losses\.weights\.reconstruction_codes"):
        check_resume(cfg.run_dir, cfg)


# (4) a recipe key that does not exist ----------------------------------------------------------

def test_unknown_recipe_key(setup, capsys, tmp_path):  # noqa: F811
    root, base = setup
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model: {mode: lora}\ntraining: {learnign_rate: 0.001}\n")
    argv = _args(root, base, "typo")
    argv[2] = str(recipe)
    _fails(capsys, argv, "unknown config key 'training.learnign_rate'", "did you mean 'training.learning_rate'")
    _fails(capsys, _args(root, base, "typo", "losses.weight={lm: 1}"), "unknown config key 'losses.weight'")


# (5) --resume without checkpoints --------------------------------------------------------------

def test_resume_without_checkpoints(setup, capsys):  # noqa: F811
    root, base = setup
    _recipe(root)
    _fails(capsys, [*_args(root, base, "never-started"), "--resume"], "--resume: no checkpoint under",
           "start the run without --resume")
    argv = _fake_run(root, base, "no-ckpt", checkpoint=False)
    _fails(capsys, [*argv, "--resume"], "--resume: no checkpoint under")


# (6) writing into an existing run without --resume ---------------------------------------------

@pytest.mark.parametrize("checkpoint,readme", [(True, False), (False, True)], ids=["checkpoints", "finished"])
def test_existing_run_without_resume(setup, capsys, checkpoint, readme):  # noqa: F811
    root, base = setup
    _recipe(root)
    name = f"exists-{checkpoint}-{readme}"
    argv = _fake_run(root, base, name, checkpoint=checkpoint, readme=readme)
    _fails(capsys, argv, "already holds a run", "pass --resume")


# other refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize("override,needle", [
    ("tasks.mix={seqrec: 1.0, nexttitle: 1.0}", "tasks.mix names unknown tasks ['nexttitle']"),
    ("tasks.mix={seqrec: 0, item2index: 0, index2item: 0}", "tasks.mix shares must be numbers >= 0, at least one > 0"),
    ("losses.weights={contrastive: 0.1}", "losses.weights names unknown terms ['contrastive']"),
    ("losses.num_negatives=0", "losses.num_negatives must be >= 1"),
    ("losses.temperature=0", "losses.temperature must be > 0"),
    ("model.mode=qlora8", "model.mode must be one of"),
    ("model.new_token_init=zeros", "model.new_token_init must be one of"),
    ("training.batch_size=many", "config key 'training.batch_size' must be int"),
    ("data=/nonexistent/genrec-data", "is not a genrec dataset directory"),
    ("tokenizer=/nonexistent/genrec-tok", "is not an item tokenizer directory"),
    ("model.base=/nonexistent/genrec-model", "model path '/nonexistent/genrec-model' does not exist"),
])
def test_config_refusals(setup, capsys, override, needle):  # noqa: F811
    root, base = setup
    _recipe(root)
    key = override.split("=", 1)[0]
    argv = _args(root, base, "refused")
    argv = _swap(argv, key, override.split("=", 1)[1]) if any(a.startswith(f"{key}=") for a in argv) \
        else [*argv, override]
    _fails(capsys, argv, needle)


def test_prompt_budget_too_small(setup, capsys):  # noqa: F811
    root, base = setup
    _recipe(root)
    _fails(capsys, _args(root, base, "short", "tasks.max_length=8"), "tasks.max_length=8 is too small")


def test_loss_needs_a_stream_the_tokenizer_lacks(setup, capsys):  # noqa: F811
    root, base = setup
    _recipe(root)
    build_tokenizer(load_config(TokenizerConfig, None, [
        "name=semonly", f"data={root / 'data'}", f"out_dir={root / 'tok'}", "plots=false", "progress=false",
        "order=[semantic]", "semantic.encoder=precomputed", f"semantic.embeddings={root / 'sem.npy'}",
        "semantic.kmeans.k=4"]))
    argv = _swap(_args(root, base, "semonly"), "tokenizer", root / "tok" / "semonly")
    _fails(capsys, argv, "contrastive_behavior (needs behavior)", "set those weights to 0")
