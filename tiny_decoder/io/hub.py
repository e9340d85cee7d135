"""The Hugging Face Hub: whether an upload can work (checked before training), and the uploads themselves."""

from .sources import hub_is_reachable


def check_hub_access() -> None:
    """Fail before training, not after it, when an upload cannot work."""
    if not hub_is_reachable():
        raise RuntimeError(
            "--push_to_hub was given but the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE=1). "
            "Connect, or drop --push_to_hub and upload the output folder later."
        )
    from huggingface_hub import HfApi

    try:
        HfApi().whoami()
    except Exception as err:  # noqa: BLE001 - any auth failure means the same fix
        raise RuntimeError(f"--push_to_hub: not logged in to the Hub ({err}); run `hf auth login` or set HF_TOKEN.") from None


def push_model(model, tokenizer, card: str, args, exporter=None) -> None:
    """Model, tokenizer and card to `args.hub_model_id`; with an `exporter` (`save_folder(model, tokenizer, folder,
    source)`, e.g. the Llama export, whose own card names the run's model as base_model), what it writes instead, so
    Hub users need no trust_remote_code. The exporter is passed in: pushing sits below the export formats."""
    from huggingface_hub import HfApi, ModelCard

    if exporter is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            exporter(model, tokenizer, folder, args.output_dir)
            api = HfApi()
            api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
            api.upload_folder(repo_id=args.hub_model_id, folder_path=folder, commit_message="export of the trained model")
        return
    model.push_to_hub(args.hub_model_id, private=args.hub_private_repo)
    tokenizer.push_to_hub(args.hub_model_id, private=args.hub_private_repo)
    ModelCard(card).push_to_hub(args.hub_model_id)


def push_checkpoint(folder, args) -> None:
    """A training checkpoint to `last-checkpoint/` of the repo (hub_strategy="checkpoint")."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
    api.upload_folder(
        repo_id=args.hub_model_id,
        folder_path=str(folder),
        path_in_repo="last-checkpoint",
        commit_message=f"checkpoint {folder.name}",
    )
