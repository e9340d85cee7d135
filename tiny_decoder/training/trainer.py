"""The Trainer: one object owns a training run, written on accelerate.Accelerator.

    trainer = Trainer(model_args, data_args, tok_args, args)      # or objective=DistillationObjective(...)
    result = trainer.train()       # steps, logs, evaluations, checkpoints; then finish()

One trainer for every device: `python` or `accelerate launch` on CPU, one or many GPUs (DDP, or FSDP
through an accelerate config file) and Apple MPS. Design choices:
- The constructor sets up everything a run needs (processes, output folder, data and tokenizer
  through the objective, model, precision, accelerator, loaders, optimizers; the Accelerator comes
  after the model because `--mixed_precision auto` times that model, see precision.py); `train()` is the table of contents of a run:
  step, log, evaluate, save, stop; `finish()` saves the model, samples, writes the card and pushes.
- Run state is one `TrainState` (step, data position, tokens, the time budget's plan) that every
  checkpoint carries, so a resumed run continues exactly.
- Data order is a pure function of (seed, epoch): every process draws the same permutation
  and accelerate gives each its share, so N processes see the batches that one process with
  N-fold gradient accumulation sees, and a resumed run sees what an uninterrupted one saw.
- The scheduler steps once per optimizer step (it is not handed to `prepare`, which would step
  it once per process), and is registered for checkpointing.
- Checkpoints are atomic and verified (see checkpoint.py).
- What one micro-batch does (backprop, zeroth-order) is a step rule (steps.py); what is minimised
  is an objective (objectives/): neither is a branch in here.
"""

import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..data import format_report
from ..data.tokenizer import load_tokenizer
from ..evaluation.loss import mean_loss
from ..evaluation.sampling import sample_texts
from ..hub import check_hub_access, push_checkpoint, push_model, render_model_card
from ..model import TinyDecoderForCausalLM
from .arguments import build_config, check_model_sources
from .budget import CALIBRATION, plan_total_steps
from .checkpoint import install_state_hooks, list_checkpoints, resolve_checkpoint, save_checkpoint, verify_checkpoint
from .interrupts import StopRequest, TrainingDiverged, TrainingInterrupted, resume_command
from .objectives import CausalLMObjective
from .optimizers import build_optimizers, lr_lambda, optimizer_card_section
from .precision import NAMES, candidates_for, choose_precision, time_model_step
from .report import (
    ActivationNorms,
    LogWindow,
    MetricsLog,
    describe_data,
    describe_hardware,
    flops_per_token,
    matmul_rate,
    plot_loss_curve,
)
from .resume import check_resume_fits
from .run_dir import OutputLock, check_output_dir, clear_run, save_atomically
from .state import TrainState
from .steps import build_steps


class EpochSampler(Sampler):
    """A permutation of range(n) fixed by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


class Trainer:
    """Trains a model with an objective (default: next-token cross-entropy) and saves it."""

    def __init__(self, model_args, data_args, tok_args, args, objective=None, command: str | None = None):
        self.model_args, self.data_args, self.tok_args, self.args = model_args, data_args, tok_args, args
        self.objective = objective or CausalLMObjective()
        self.command = command
        check_model_sources(model_args)
        # Processes and devices now; the Accelerator once the model exists, since `--mixed_precision auto`
        # times that model to choose the precision the Accelerator is built with.
        self.processes = PartialState(cpu=args.use_cpu)
        self.main = self.processes.is_main_process
        self.say = self.processes.print
        if self.processes.device.type == "cpu":
            # Tiny gradients turn denormal late in training and slow CPU matmuls several-fold; flush them.
            torch.set_flush_denormal(True)
        if args.push_to_hub and self.main:
            check_hub_access()
        set_seed(args.seed)
        self.out_dir = Path(args.output_dir)
        self._prepare_output_dir()
        try:
            self._setup()
        except BaseException:
            self.lock.release()  # a run that could not start leaves no lock behind
            raise

    def _setup(self):
        """Resume state, data and tokenizer, model, loaders, schedule length, optimizers: in this order (the RNG
        draws of model init and loaders must not move)."""
        args = self.args
        self.state, self.resume_from = TrainState(), None
        if args.resume_from_checkpoint:
            self.resume_from = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
            self.state.load_state_dict(verify_checkpoint(self.resume_from))
            check_resume_fits(self.resume_from, self.state, self.model_args, self.data_args.block_size)
        self.state.block_size = self.data_args.block_size
        self.tokenizer, self.datasets, self.reports = self._build_data()
        set_seed(args.seed)  # the initial weights depend on the seed alone, not on what ran before
        self.model = self._build_model()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.precision = self.state.precision = self._choose_precision()
        self.accelerator = Accelerator(
            cpu=args.use_cpu,
            mixed_precision=self.precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=None if args.report_to == "none" else args.report_to,
            project_dir=args.output_dir,
        )
        install_state_hooks(self.accelerator)
        self.train_dl, self.eval_dl, self.sampler = self._build_loaders()
        self.total_steps, self.steps_per_epoch = self._count_steps()
        self._prepare_optimization()

    # ------------------------------------------------------------------------------------- the run
    def train(self) -> dict:
        """Optimizer steps until the schedule ends, time runs out or Ctrl-C; then `finish()`."""
        try:
            return self._train()
        finally:
            self.lock.release()

    def _train(self) -> dict:
        if self._finished_already():
            if self._outputs_saved():
                self.accelerator.end_training()
                return {
                    "step": self.state.step,
                    "tokens": self.state.tokens,
                    "eval_loss": None,
                    "minutes": 0.0,
                    "params": self.n_params,
                    "finished_already": True,
                }
            self.say(f"{self.resume_from} ends the run, but the run's final model was never saved: saving it now")
            self._begin()
            self.stopped = False
            return self.finish(self.evaluate())
        self._begin()
        with StopRequest() as self.stop:
            try:
                eval_loss = self._steps()
            except KeyboardInterrupt as err:
                if isinstance(err, TrainingInterrupted):
                    raise
                saved = list_checkpoints(self.args.output_dir)
                where = f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
                raise TrainingInterrupted(
                    f"interrupted at step {self.state.step}; {where}. Resume with: {resume_command(self.command)}"
                ) from None
        return self.finish(eval_loss)

    def _steps(self) -> float | None:
        """The loop over batches; returns the last validation loss."""
        args, state = self.args, self.state
        eval_loss, epoch, skip = None, state.epoch, state.batch_in_epoch
        self.model.train()
        while True:
            for batch_in_epoch, batch in self._batches(epoch, skip):
                self.window.add(*self.train_step(batch))
                if not self.accelerator.sync_gradients:
                    continue  # accumulating
                self._advance(epoch, batch_in_epoch)
                self._check_finite()
                record = {"step": state.step}
                if state.step % args.logging_steps == 0 or state.step == self.total_steps:
                    record.update(self._training_metrics())
                out_of_time = args.max_train_minutes is not None and self._minutes() >= args.max_train_minutes
                last = state.step >= self.total_steps or out_of_time
                if state.step % args.eval_steps == 0 or last:
                    eval_loss = self.evaluate()
                    record.update(eval_loss=eval_loss, eval_ppl=math.exp(min(eval_loss, 50)))
                    self.bar.write(f"step {state.step}: validation loss {eval_loss:.4f}, perplexity {record['eval_ppl']:.2f}")
                self._write(record)
                if state.step % args.save_steps == 0 or last or self.stopped:
                    self.save_checkpoint()
                if last or self.stopped:
                    if out_of_time and state.step < self.total_steps:
                        self.bar.write(f"stopping at step {state.step}: max_train_minutes={args.max_train_minutes} reached")
                    self.bar.close()
                    return eval_loss
            epoch, skip = epoch + 1, 0

    def train_step(self, batch) -> tuple[torch.Tensor, dict]:
        """One micro-batch: the step rule (backprop, or forward passes only) applied to the objective."""
        with self.accelerator.accumulate(self.model):
            return self.steps.at(self.state.step)(self.model, self.objective, batch)

    def evaluate(self) -> float:
        """Mean next-token loss on the validation blocks (every process's share), without torch.compile:
        a forward-only graph and a short last batch would each cost a compile. (FSDP1's wrapper stays.)"""
        acc = self.accelerator
        model = self.model if acc.distributed_type == "FSDP" else acc.unwrap_model(self.model, keep_torch_compile=False)
        return mean_loss(model, self.eval_dl, accelerator=acc, max_batches=self.args.max_eval_batches)

    def save_checkpoint(self) -> Path:
        """checkpoint-STEP with the config and tokenizer beside the weights, so it opens with from_pretrained."""
        self._check_weights_finite()
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        savers = [model.config.save_pretrained, self.tokenizer.save_pretrained]
        if getattr(model, "generation_config", None) is not None:
            savers.append(model.generation_config.save_pretrained)
        ckpt = save_checkpoint(
            self.accelerator,
            self.args.output_dir,
            self.state.state_dict(),
            self.args.save_total_limit,
            model=self.model,
            savers=savers,
        )
        if self.args.push_to_hub and self.args.hub_strategy == "checkpoint" and self.main:
            push_checkpoint(ckpt, self.args)
        return ckpt

    def finish(self, eval_loss: float | None) -> dict:
        """Save the model and tokenizer, sample, plot, write the card, push; raise if Ctrl-C stopped the run."""
        state, minutes = self.state, self._minutes()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        if self.stopped and state.step >= self.total_steps:
            self.say(f"Ctrl-C came during the last step ({state.step}): the run is complete; saving its outputs")
        elif self.stopped:
            raise TrainingInterrupted(
                f"stopped by Ctrl-C at step {state.step}; checkpoint-{state.step} holds it. "
                f"Resume with: {resume_command(self.command)}"
            )
        result = {"step": state.step, "tokens": state.tokens, "eval_loss": eval_loss, "minutes": minutes, "params": self.n_params}
        if not self.main:
            return result
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        self._check_weights_finite()
        model.config.use_cache = True
        save_atomically(self.args.output_dir, model.save_pretrained, self.tokenizer.save_pretrained)
        samples = self._samples(model)
        for i, s in enumerate(samples):
            print(f"\n--- sample {i + 1} ---\n{s}")
        plot_loss_curve(self.log.read(), str(self.out_dir / "loss_curve.png"))
        card = self._model_card(model, samples, eval_loss, minutes)
        (self.out_dir / "README.md.tmp").write_text(card)
        (self.out_dir / "README.md.tmp").replace(self.out_dir / "README.md")
        self.say(
            f"\nsaved model, tokenizer, model card and loss curve to {self.out_dir}; validation loss {eval_loss:.4f} "
            f"after {state.step} steps, {state.tokens:,} tokens, {minutes:.1f} min"
        )
        if self.args.push_to_hub:
            push_model(model, self.tokenizer, card, self.args)
        result["samples"] = samples
        return result

    # ---------------------------------------------------------------------------- set-up pieces
    def _prepare_output_dir(self):
        """Every process checks (so all raise alike); the main process alone clears and creates."""
        args = self.args
        old_run = check_output_dir(args.output_dir, args.overwrite_output_dir, bool(args.resume_from_checkpoint))
        self.processes.wait_for_everyone()
        self.lock = OutputLock(args.output_dir)  # one writer per folder; released when the run ends, or at exit
        if self.main:
            self.lock.acquire()
            if old_run:
                self.say(f"--overwrite_output_dir: deleting the run in {self.out_dir} ({len(old_run)} entries)")
                clear_run(old_run)
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.processes.wait_for_everyone()

    def _build_data(self):
        """(tokenizer, {"train", "validation"} datasets, reports), through the objective. The main process builds
        caches and the tokenizer first; the others reuse them."""
        data_args, tok_args, objective = self.data_args, self.tok_args, self.objective
        tok_dir = self.out_dir / "tokenizer"
        if self.model_args.model_name_or_path and not tok_args.tokenizer_name:
            tok_args.tokenizer_name = self.model_args.model_name_or_path  # continue with the model's own tokenizer
        t_data = time.time()
        with self.processes.main_process_first():
            raw = objective.load_data(data_args)
            if tok_dir.exists() and (self.resume_from or not self.main):
                tokenizer = load_tokenizer(str(tok_dir), data_args.block_size)
            else:
                tokenizer = objective.build_tokenizer(tok_args, data_args, raw)
                if self.main:
                    save_atomically(str(tok_dir), tokenizer.save_pretrained)
            datasets, reports = objective.build_datasets(data_args, tokenizer, raw)
        if reports:
            self.say(format_report(reports))
        self.say(f"data ready in {time.time() - t_data:.1f} s")
        return tokenizer, datasets, reports

    def _build_model(self):
        """A saved model to continue, or a new one from a preset/config; the objective prepares it."""
        margs, tokenizer, block_size = self.model_args, self.tokenizer, self.data_args.block_size
        if margs.model_name_or_path:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(margs.model_name_or_path, attn_implementation=margs.attn_implementation)
            self.objective.prepare(model, tokenizer, self.processes, compile=self.args.torch_compile)  # may grow the vocabulary
            if model.config.vocab_size < len(tokenizer):
                raise ValueError(
                    f"The tokenizer has {len(tokenizer)} tokens but {margs.model_name_or_path!r} only "
                    f"{model.config.vocab_size} embeddings; use the model's own tokenizer."
                )
            context = getattr(model.config, "max_position_embeddings", None)
            if context is not None and block_size > context:
                raise ValueError(
                    f"block_size={block_size} is longer than {margs.model_name_or_path!r}'s "
                    f"context (max_position_embeddings={context}); pass --block_size {context} or less."
                )
        else:
            config = build_config(margs, tokenizer, block_size)
            model = TinyDecoderForCausalLM._from_config(config, attn_implementation=margs.attn_implementation)
            self.objective.prepare(model, tokenizer, self.processes, compile=self.args.torch_compile)
        if self.args.push_to_hub and self.args.hub_format == "llama":  # refused before training, not after it
            from ..export.llama import check_exportable

            check_exportable(model.config)
        signature = self.objective.signature()
        if self.resume_from is not None and self.state.objective not in (None, signature):
            self.say(f"warning: {self.resume_from} was trained with {self.state.objective}; this run uses {signature}")
        self.state.objective = signature
        c = model.config
        self.say(
            f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {c.num_hidden_layers} "
            f"layers, hidden {c.hidden_size}, {c.position_embedding}/{c.norm}/{c.hidden_act}"
        )
        return model

    def _choose_precision(self) -> str:
        """The run's precision: as given, the resumed run's own, or (auto) the fastest on this machine, timed
        on the model's eager step (the compiled step keeps the ratio roughly). Every process times; the main
        process's choice is the one all use."""
        args, device, self.precision_reason = self.args, self.processes.device, ""
        if args.mixed_precision != "auto":
            return args.mixed_precision
        if self.state.precision is not None:  # a resumed auto run keeps its precision (and optimizer scaler)
            self.precision_reason = f"kept from {self.resume_from}"
            return self.state.precision
        t0 = time.time()
        with_grad = args.optim != "zeroth_order" or args.zo_hybrid != "none"
        run_step = time_model_step(self.model, args.per_device_train_batch_size, self.data_args.block_size, device, with_grad)
        result = [choose_precision(candidates_for(device, zeroth_order=args.optim == "zeroth_order"), run_step)]
        if self.processes.num_processes > 1:
            broadcast_object_list(result)
        self.precision_reason = result[0].reason()
        self.say(f"--mixed_precision auto chose {self.precision_reason} ({time.time() - t0:.0f} s)")
        return result[0].choice

    def _build_loaders(self):
        """Loaders with generators of their own: creating an iterator would otherwise draw from the global
        RNG, so a resumed run's dropout masks would differ from an uninterrupted run's."""
        args, objective, blocks = self.args, self.objective, self.datasets
        sampler = None if self.data_args.streaming else EpochSampler(len(blocks["train"]), args.seed)
        train_dl = DataLoader(
            blocks["train"],
            batch_size=args.per_device_train_batch_size,
            sampler=sampler,
            collate_fn=objective.collate,
            drop_last=True,
            num_workers=args.dataloader_num_workers,
            generator=torch.Generator().manual_seed(args.seed),
        )
        eval_dl = DataLoader(
            blocks["validation"],
            batch_size=args.per_device_eval_batch_size,
            collate_fn=objective.collate,
            generator=torch.Generator().manual_seed(args.seed),
        )
        return train_dl, eval_dl, sampler

    def _count_steps(self) -> tuple[int, int | None]:
        """(optimizer steps of the run, steps per epoch or None for a stream)."""
        args, n_train, processes = self.args, None, self.processes.num_processes
        if self.data_args.streaming:
            if args.max_steps <= 0:
                raise ValueError("Streaming data has no known length: set --max_steps.")
            total, per_epoch = args.max_steps, None
        else:
            n_train = len(self.datasets["train"])
            batches = n_train // args.per_device_train_batch_size // processes  # per process per epoch, drop_last
            if batches == 0:
                raise ValueError(
                    f"{n_train} training blocks make no full batch of {args.per_device_train_batch_size} "
                    f"per process on {processes} process(es); lower --per_device_train_batch_size."
                )
            per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
            total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
        if self.state.planned_total_steps and self.state.planned_from == total and args.max_train_minutes:
            total = self.state.planned_total_steps  # the time budget's plan, made earlier in this run
        return total, per_epoch

    def _prepare_optimization(self):
        """Compile, build the optimizers and the schedule, hand them to accelerate, pick the step rules.
        The scheduler stays out of prepare(): there it would step once per process per optimizer step."""
        acc, args = self.accelerator, self.args
        model = torch.compile(self.model) if args.torch_compile else self.model
        optimizers, self.scheduler = build_optimizers(model, args, self.total_steps, acc)  # two for a hybrid run
        self.model, *optimizers, self.train_dl, self.eval_dl = acc.prepare(model, *optimizers, self.train_dl, self.eval_dl)
        acc.register_for_checkpointing(self.scheduler)
        self.steps = build_steps(args, acc, optimizers, self.scheduler)
        self.norms = ActivationNorms(acc.unwrap_model(self.model)) if args.log_activation_norms else None

    def _finished_already(self) -> bool:
        return self.resume_from is not None and self.state.step >= self.total_steps

    def _outputs_saved(self) -> bool:
        """The final model of this run is in output_dir (written after the checkpoint that ends the run)."""
        final, state_file = self.out_dir / "model.safetensors", Path(self.resume_from) / "trainer_state.json"
        if not (final.exists() and (self.out_dir / "README.md").exists()):
            return False
        if final.stat().st_mtime < state_file.stat().st_mtime:
            return False
        self.say(
            f"{self.resume_from} is at step {self.state.step}, and this run has {self.total_steps} steps: it is "
            f"finished, nothing to do (its model is saved). To train longer, resume with a larger --max_steps "
            f"(or --num_train_epochs)."
        )
        return True

    def _begin(self):
        """Load the checkpoint's weights and optimizer state, open the log and trackers, say what will run."""
        acc, args, data_args, state = self.accelerator, self.args, self.data_args, self.state
        if self.resume_from is not None:
            acc.load_state(str(self.resume_from))
            self.say(f"resumed from {self.resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
        self.tokens_per_step = (
            data_args.block_size * args.per_device_train_batch_size * args.gradient_accumulation_steps * acc.num_processes
        )
        self.flops_per_token = flops_per_token(self.n_params, self.model_config, data_args.block_size)
        self.peak_flops = matmul_rate(acc.device, self.precision)  # per device; measured once, then cached
        self.log = MetricsLog(
            args.output_dir, enabled=self.main, resume_step=state.step if self.resume_from is not None else None
        )
        if args.report_to != "none":
            values = {**vars(args), **vars(data_args), **self.model_config.to_dict()}
            acc.init_trackers("tiny-decoder", config={k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))})
        self.say(
            f"training {self.total_steps} steps ({self.steps_per_epoch or '?'} per epoch), {self.tokens_per_step:,} tokens "
            f"per step, {acc.num_processes} process(es) on {acc.device}, precision {NAMES[self.precision]}"
        )
        if args.warmup_steps >= self.total_steps:
            self.say(
                f"warning: --warmup_steps {args.warmup_steps} is not below the run's {self.total_steps} steps: the learning "
                f"rate never reaches --learning_rate {args.learning_rate:g}; lower --warmup_steps."
            )
        self.forwards_before, self.stopped, self.calibration = state.forward_passes, False, None
        self.t_start = time.time()
        self.window = LogWindow(acc.device, self.t_start)
        self.bar = tqdm(total=self.total_steps, initial=state.step, disable=not self.main, dynamic_ncols=True, desc="train")

    # ------------------------------------------------------------------------------ loop pieces
    @property
    def model_config(self):
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False).config

    def _minutes(self) -> float:
        return (time.time() - self.t_start) / 60

    def _batches(self, epoch: int, skip: int):
        """(micro-batches of this epoch consumed so far, batch), resuming `skip` batches into the epoch."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        dl = self.accelerator.skip_first_batches(self.train_dl, skip) if skip else self.train_dl
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(epoch)
        consumed = skip
        for batch in dl:
            consumed += 1
            yield consumed, batch
        if self.data_args.streaming and consumed == 0:
            raise ValueError("The training stream yielded no batch.")

    def _advance(self, epoch: int, batch_in_epoch: int):
        """After an optimizer step: the schedule, the state, the progress bar, Ctrl-C, the time budget."""
        acc, state = self.accelerator, self.state
        self.scheduler.step()
        state.step += 1
        state.tokens += self.tokens_per_step
        state.epoch, state.batch_in_epoch = epoch, batch_in_epoch
        state.forward_passes = self.forwards_before + self.steps.forward_passes * acc.num_processes
        self.window.steps += 1
        self.bar.update(1)
        # Several processes agree by an all-reduce, so only at logging steps (which sync anyway), not every step.
        if acc.num_processes == 1 or state.step % self.args.logging_steps == 0:
            self.stopped = self.stop.agreed(acc)
        if self.args.max_train_minutes and state.planned_total_steps is None and self.total_steps > state.step:
            if self.calibration is None and state.step >= CALIBRATION[0]:
                self.calibration = (state.step, time.time())
            elif self.calibration is not None and state.step - self.calibration[0] >= CALIBRATION[1] - CALIBRATION[0]:
                self._plan_schedule()

    def _check_finite(self):
        """Stop at the step where the loss or gradient norm turns inf/nan (a collective with several processes, so
        only at logging steps there, as for Ctrl-C); the checkpoints already written keep finite weights."""
        acc, step = self.accelerator, self.state.step
        if acc.num_processes > 1 and step % self.args.logging_steps:
            return
        grad_norm = self.steps.grad_norm  # a tensor, or a float from some backends, or None without clipping
        bad = ~torch.isfinite(self.window.loss_sum)
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=bad.device))
        if acc.num_processes > 1:
            bad = acc.reduce(bad.float().reshape(1), reduction="sum") > 0
        if bool(bad):
            what = "loss" if not torch.isfinite(self.window.loss_sum) else "gradient norm"
            self._diverged(f"the training {what} is not finite at step {step}")

    def _check_weights_finite(self):
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):  # one sync, not one a tensor
            self._diverged(f"the weights hold inf or nan after step {self.state.step}")

    def _diverged(self, what: str):
        saved = list_checkpoints(self.args.output_dir)
        kept = f"the last checkpoint, {saved[-1]}, holds finite weights" if saved else "no checkpoint was written"
        hint = self.objective.divergence_hint()
        raise TrainingDiverged(
            f"training diverged: {what}. Likely cause: the learning rate ({self.scheduler.get_last_lr()[0]:g} at this "
            f"step, peak {self.args.learning_rate:g}) is too high{hint}; {kept}, and no final model was saved. Lower "
            f"--learning_rate (or raise --warmup_steps) and train again."
        )

    def _plan_schedule(self):
        """Shorten the schedule to what fits in --max_train_minutes at the speed measured so far (see budget.py)."""
        acc, args, state = self.accelerator, self.args, self.state
        now, (step0, t0) = time.time(), self.calibration
        per_step = (now - t0) / (state.step - step0)
        eval_tokens = (
            0
            if self.data_args.streaming
            else (
                min(len(self.datasets["validation"]), (args.max_eval_batches or 10**9) * args.per_device_eval_batch_size)
                * self.data_args.block_size
            )
        )
        eval_s = eval_tokens / (3 * self.tokens_per_step / per_step)  # a forward costs about a third of a training step
        planned = plan_total_steps(
            state.step, self.total_steps, now - self.t_start, per_step, args.max_train_minutes * 60, args.eval_steps, eval_s
        )
        if acc.num_processes > 1:  # every process must take the same number of steps
            # accelerate's reduce has no "min" (it would sum): take the max of the negated plans
            planned = -int(acc.reduce(torch.tensor([-planned], device=acc.device), reduction="max").item())
        state.planned_total_steps, state.planned_from = planned, self.total_steps
        if planned < self.total_steps:
            self.scheduler.lr_lambdas = [
                lr_lambda(args.lr_scheduler_type, args.warmup_steps, planned, args.min_lr_ratio)
                for _ in self.scheduler.lr_lambdas
            ]
            self.bar.total = planned
            self.bar.write(
                f"max_train_minutes={args.max_train_minutes}: at {per_step:.2f} s per step, {planned} of "
                f"{self.total_steps} steps fit; the learning-rate schedule now ends at step {planned}"
            )
        self.total_steps = planned

    def _training_metrics(self) -> dict:
        """Loss (averaged over the window and the processes), lr, tokens/s, MFU and the step rule's statistics."""
        now, window = time.time(), self.window
        tokens_per_s = self.tokens_per_step * window.steps / max(now - window.since, 1e-9)
        loss, extras = window.pop(self.accelerator, now)
        record = {
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": self.state.tokens,
            "tokens_per_s": tokens_per_s,
            **extras,
        }
        record.update(self.steps.pop_stats(), **(self.norms.pop() if self.norms is not None else {}))
        record["flops_per_s"] = tokens_per_s * self.flops_per_token
        record["mfu"] = record["flops_per_s"] / (self.peak_flops * self.accelerator.num_processes)
        self.bar.set_postfix(
            loss=f"{loss:.3f}",
            lr=f"{record['lr']:.2e}",
            tok_s=f"{tokens_per_s:.0f}",
            mfu=f"{record['mfu']:.1%}",
        )
        return record

    def _write(self, record: dict):
        if len(record) > 1:
            record["forward_passes"] = self.state.forward_passes
            self.log.write({**record, "elapsed_s": round(time.time() - self.t_start, 2)})
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)

    # ---------------------------------------------------------------------------- finish pieces
    def _samples(self, model) -> list[str]:
        """The run's sample texts from the objective's prompt (a story after an EOS, or a chat answer)."""
        prompt = self.objective.prompt_ids(self.tokenizer, self.args.sample_prompt)
        return sample_texts(
            model,
            self.tokenizer,
            [prompt] * self.args.num_samples,
            self.args.max_new_tokens,
            seed=self.args.seed,
            include_prompt=self.objective.samples_include_prompt,
        )

    def _utilisation(self) -> str:
        """', 41 % of its measured fp32 matmul rate (209 GFLOP/s)': the mean MFU of the run's log records."""
        mfus = [r["mfu"] for r in self.log.read() if "mfu" in r]
        if not mfus:
            return ""
        dtype = NAMES[self.precision]
        return (
            f"; training ran at {sum(mfus) / len(mfus):.0%} of its measured {dtype} matmul rate "
            f"({self.peak_flops / 1e9:,.0f} GFLOP/s per device) on average"
        )

    def _model_card(self, model, samples: list[str], eval_loss: float, minutes: float) -> str:
        args, state, tok_args = self.args, self.state, self.tok_args
        dataset_name, dataset_desc = describe_data(self.data_args, self.reports)
        return render_model_card(
            model.config,
            {
                "repo": args.hub_model_id or args.output_dir,
                "local": not args.hub_model_id,
                "title": (args.hub_model_id or self.out_dir.resolve().name).split("/")[-1],
                "dataset_name": dataset_name,
                "dataset_desc": dataset_desc,
                "tokenizer_desc": tok_args.tokenizer_name
                or f"byte-level BPE, {len(self.tokenizer)} tokens, trained on the training split",
                "steps": state.step,
                "tokens": state.tokens,
                "batch_tokens": self.tokens_per_step,
                "learning_rate": args.learning_rate,
                "lr_scheduler_type": args.lr_scheduler_type,
                "warmup_steps": args.warmup_steps,
                "mixed_precision": NAMES[self.precision]
                + (f" (chosen by --mixed_precision auto: {self.precision_reason})" if self.precision_reason else ""),
                "hardware": describe_hardware(self.accelerator) + self._utilisation(),
                "minutes": minutes,
                "eval_loss": eval_loss,
                "eval_ppl": math.exp(min(eval_loss, 50)),
                "command": self.command or " ".join(sys.argv),
                "prompt": args.sample_prompt,
                "seed": args.seed,
                "samples": samples,
                "params": self.n_params,
                "method": self.objective.card_section() + optimizer_card_section(args),
                "base_model": self.model_args.model_name_or_path,
                "tags": self.objective.tags + (("zeroth-order",) if args.optim == "zeroth_order" else ()),
            },
        )
