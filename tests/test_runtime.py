"""The device resolver and the data-parallel rank helper, on a CPU-only machine."""

import pytest
import torch

from genrec.errors import ConfigError, GenrecError
from genrec.runtime import Ranks, resolve_device


def test_auto_is_cpu_without_cuda_and_explicit_cpu_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_picks_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"has 2 CUDA GPU\(s\) \(cuda:0 .. cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GenrecError, match="sees no CUDA GPU.*device=cpu or device=auto"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "xla"])
def test_unknown_devices_name_the_choices(name):
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


def test_a_plain_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    r = Ranks()
    assert (r.rank, r.world, r.is_main) == (0, 1, True)
    assert r.mine(3) == [0, 1, 2] and r.gather({"a": 1}) == [{"a": 1}]
    r.barrier()
    r.rank, r.world = 1, 3  # round robin: rank 1 of 3
    assert r.mine(8) == [1, 4, 7]


def test_sasrec_and_text_encoder_refuse_a_missing_gpu(monkeypatch):
    from genrec.data.split import leave_one_out
    from genrec.encoders.sasrec import SASRecConfig, train_sasrec
    from genrec.encoders.text import TextEncoder, TextEncoderConfig
    from tests.encoders.test_din import twins_dataset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    split = leave_one_out(twins_dataset(users=20), max_history=20)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        train_sasrec(split, SASRecConfig(device="cuda:1", epochs=1), progress=False)
    assert SASRecConfig().device == TextEncoderConfig().device == "auto"
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        TextEncoder(TextEncoderConfig(model="/nonexistent-but-never-loaded", kind="causal", device="cuda"))
