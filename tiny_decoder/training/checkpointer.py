"""The run's folder and what is written into it: the output-folder rules and lock, resuming, the periodic
checkpoints (atomic and verified, see checkpoint.py) and the final model, tokenizer and card."""

from pathlib import Path

from ..io.hub import push_checkpoint
from ..io.run_dir import OutputLock, check_output_dir, clear_run, save_atomically
from .checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint, verify_checkpoint


class Checkpointer:
    """Claims `output_dir` (every process checks, so all raise alike; the main process alone clears, creates and
    locks it) and owns the checkpoint cadence (`--save_steps`, the last step, a Ctrl-C stop)."""

    def __init__(self, args, processes):
        self.args, self.processes, self.main = args, processes, processes.is_main_process
        self.out_dir = Path(args.output_dir)
        old_run = check_output_dir(args.output_dir, args.overwrite_output_dir, bool(args.resume_from_checkpoint))
        processes.wait_for_everyone()
        self.lock = OutputLock(args.output_dir)  # one writer per folder; released when the run ends, or at exit
        if self.main:
            self.lock.acquire()
            if old_run:
                processes.print(f"--overwrite_output_dir: deleting the run in {self.out_dir} ({len(old_run)} entries)")
                clear_run(old_run)
            self.out_dir.mkdir(parents=True, exist_ok=True)
        processes.wait_for_everyone()
        self.resume_from: Path | None = None
        if args.resume_from_checkpoint:
            self.resume_from = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)

    def resumed_state(self) -> dict | None:
        """The checkpoint's trainer_state.json, after verifying every file against its manifest (None: a new run)."""
        return verify_checkpoint(self.resume_from) if self.resume_from is not None else None

    def load(self, accelerator, state):
        """The checkpoint's weights, optimizer, scheduler and RNG states into the prepared objects."""
        if self.resume_from is not None:
            accelerator.load_state(str(self.resume_from))
            self.processes.print(
                f"resumed from {self.resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
            )

    def due(self, step: int, last: bool) -> bool:
        return step % self.args.save_steps == 0 or last

    def save(self, accelerator, model, tokenizer, state, extra_savers=()) -> Path:
        """checkpoint-STEP with the config and tokenizer beside the weights, so it opens with from_pretrained;
        `extra_savers` write more of the run's state (the weight average) into the folder."""
        module = accelerator.unwrap_model(model, keep_torch_compile=False)
        savers = [module.config.save_pretrained, tokenizer.save_pretrained, *extra_savers]
        if getattr(module, "generation_config", None) is not None:
            savers.append(module.generation_config.save_pretrained)
        args = self.args
        ckpt = save_checkpoint(
            accelerator, args.output_dir, state.state_dict(), args.save_total_limit, model=model, savers=savers
        )
        if args.push_to_hub and args.hub_strategy == "checkpoint" and self.main:
            push_checkpoint(ckpt, args)
        return ckpt

    def save_model(self, module, tokenizer):
        """The final model and tokenizer, written whole (temporary folder, then moved in)."""
        module.config.use_cache = True
        save_atomically(self.args.output_dir, module.save_pretrained, tokenizer.save_pretrained)

    def save_card(self, card: str):
        tmp = self.out_dir / "README.md.tmp"
        tmp.write_text(card)
        tmp.replace(self.out_dir / "README.md")

    def run_finished(self, state, total_steps: int) -> bool:
        """The resumed checkpoint ends the run (its step is the schedule's last)."""
        return self.resume_from is not None and state.step >= total_steps

    def outputs_saved(self, state, total_steps: int) -> bool:
        """The final model of this run is in output_dir (written after the checkpoint that ends the run)."""
        final, state_file = self.out_dir / "model.safetensors", Path(self.resume_from) / "trainer_state.json"
        if not (final.exists() and (self.out_dir / "README.md").exists()):
            return False
        if final.stat().st_mtime < state_file.stat().st_mtime:
            return False
        self.processes.print(
            f"{self.resume_from} is at step {state.step}, and this run has {total_steps} steps: it is "
            f"finished, nothing to do (its model is saved). To train longer, resume with a larger --max_steps "
            f"(or --num_train_epochs)."
        )
        return True

    def last_checkpoint(self) -> Path | None:
        saved = list_checkpoints(self.args.output_dir)
        return saved[-1] if saved else None

    def release(self):
        self.lock.release()
