"""The Hub push: a pre-flight check of the push target (before training) and the upload of the stock-CLIP
export with its card (`ldifs_hf.cards` writes the cards)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id


class HubPushError(ValueError):
    """The Hub push cannot work; the message is one line naming the problem and the fix."""


# -- pushing -------------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (requests' errors, OfflineModeIsEnabled, HfHubHTTPError are OSErrors) plus the base error
    of whichever HTTP client huggingface_hub uses, which need not be an OSError."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass  # that client is not installed, so it cannot raise either
    return tuple(errors)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def check_push_target(repo_id: str | None, token: str | None = None, *, api=None) -> str:
    """Before training: check that `--push_to_hub` can work, and return the full repo id ('owner/name').

    Checks, in order: `repo_id` is a model repo id ('owner/name', or 'name' under the token's account);
    a token is there (`token`, else `hf auth login`/HF_TOKEN); the Hub answers `whoami` with it and it may
    write; the namespace is the user's or one of their organisations; the repo is a reachable model repo
    or does not exist yet (then the push creates it). `api` replaces `HfApi(token=token)` (tests).
    Raises HubPushError with one line naming the problem and the fix.
    """
    if not repo_id or not str(repo_id).strip():
        raise HubPushError("no Hub repo to push to: pass --hub_model_id owner/name (or name, to push under your account)")
    repo_id = str(repo_id).strip()
    kind = repo_id.split("/", 1)[0]
    if kind in ("datasets", "spaces") and repo_id.count("/") == 2:
        raise HubPushError(f"{repo_id!r} names a {kind[:-1]} repo but --push_to_hub uploads a model; pass --hub_model_id owner/name")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubPushError(f"{repo_id!r} is not a Hub model repo id ({_one_line(e)}); pass --hub_model_id owner/name or name") from None

    token = token or get_token()
    if not token:
        raise HubPushError("no Hugging Face token: run `hf auth login` or pass --hub_token (or set HF_TOKEN), or drop --push_to_hub")
    api = api if api is not None else HfApi(token=token)

    unreachable = "cannot reach the Hugging Face Hub to push to {!r} ({}); check the network or drop --push_to_hub"
    try:
        me = api.whoami()
    except HfHubHTTPError as e:
        if _status(e) == 401:
            raise HubPushError(f"the Hugging Face token was rejected ({_one_line(e)}); run `hf auth login` or pass a valid --hub_token") from None
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None
    except _network_errors() as e:
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None

    user = me.get("name") if isinstance(me, Mapping) else None
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role") if isinstance(me, Mapping) else None
    if role == "read":
        raise HubPushError(f"the Hugging Face token of {user!r} is read-only; create a write token and run `hf auth login` or pass --hub_token")
    if "/" not in repo_id:
        if not user:
            raise HubPushError(f"cannot tell which account {repo_id!r} belongs to (whoami gave no name); pass --hub_model_id owner/name")
        repo_id = f"{user}/{repo_id}"
    namespace = repo_id.split("/", 1)[0]
    if user and isinstance(me, Mapping):
        mine = {user} | {org.get("name") for org in me.get("orgs") or [] if isinstance(org, Mapping)}
        if namespace not in mine:
            raise HubPushError(f"the token of {user!r} cannot push to {repo_id!r}: {namespace!r} is neither the user nor one of "
                               f"their organisations {sorted(n for n in mine if n)}; pass --hub_model_id {user}/{repo_id.split('/', 1)[1]}")

    try:
        api.repo_info(repo_id, repo_type="model")
    except GatedRepoError as e:  # a subclass of RepositoryNotFoundError: the repo exists but is not ours to read
        raise HubPushError(f"the model repo {repo_id!r} exists but this token cannot access it ({_one_line(e)}); pass another --hub_model_id") from None
    except RepositoryNotFoundError:
        return repo_id  # does not exist yet: push_clip_to_hub creates it
    except HfHubHTTPError as e:
        raise HubPushError(f"the Hub refused access to {repo_id!r} ({_one_line(e)}); check the token's permissions or pass another --hub_model_id") from None
    except _network_errors() as e:
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None
    return repo_id


def push_clip_to_hub(folder: str, repo_id: str, token: str | None = None, private: bool | None = None, commit_message: str | None = None) -> str:
    """Upload an exported CLIP directory (weights, processor, card) to the Hub in one commit; returns the
    commit URL. A failed upload raises HubPushError (one line) saying the export is still on disk."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not an exported model directory (no config.json)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message or "Upload fine-tuned CLIP (ldifs_hf)")
    except _network_errors() as e:
        raise HubPushError(f"pushing {folder!r} to {repo_id!r} failed ({_one_line(e)}); the export is kept there: "
                           "retry with ldifs_hf.hub.push_clip_to_hub") from None
    return str(getattr(info, "commit_url", info))
