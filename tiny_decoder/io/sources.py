"""Where a model comes from: a saved folder here or a Hub id, told apart by one rule, checked before any work.

Library code and scripts share these checks, so a path that looks local never reaches the Hub, a Hub id is
refused at once when the Hub cannot be reached, and cards never leak a path of this machine as `base_model`.
"""

import socket
from pathlib import Path
from urllib.parse import urlparse


def hub_is_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the Hub's host does not answer within `timeout` s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def looks_local(name: str) -> bool:
    """A Hub id is `owner/name` or a bare `name` (`gpt2`); anything else (absolute, relative, several slashes) is
    meant as a path, and so is `owner/name` whose `owner` is a folder here (runs/tinyy: a mistyped run folder)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return True
    return name.count("/") == 1 and Path(name.split("/")[0]).is_dir()


def hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub model, None for a path of this machine (cards' `base_model` must not leak one)."""
    return name if name and not (Path(name).expanduser().exists() or looks_local(name)) else None


def check_model_source(value: str, flag: str = "model_name_or_path", needs: str = "config.json and model.safetensors") -> None:
    """The one check of a model given on a command line, before any work: a local folder must be a saved
    model folder, a path that looks local must exist, and a Hub name needs the Hub (offline: said at once)."""
    path = Path(value).expanduser()
    give = f"give a folder written by save_pretrained (with {needs})"
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"--{flag} {value!r} is a folder without config.json: not a saved model folder; {give}.")
    if path.exists():
        return
    if looks_local(value):
        raise ValueError(f"--{flag} {value!r} does not exist; {give}.")
    if not hub_is_reachable():
        raise ValueError(
            f"--{flag} {value!r} does not exist here, and the Hub cannot be reached to look it up as a model id; "
            f"{give}, or go online."
        )
