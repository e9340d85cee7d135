"""The Trainer: one object owns a training run, written on accelerate.Accelerator.

    trainer = Trainer(model_args, data_args, tok_args, args)      # or objective=DistillationObjective(...)
    result = trainer.train()       # steps, logs, evaluations, checkpoints; then finish()

One trainer for every device: `python` or `accelerate launch` on CPU, one or many GPUs (DDP, or FSDP
through an accelerate config file) and Apple MPS. Design choices:
- The run is made of parts, each owning one concern and its cadence: the Checkpointer (output folder and
  lock, resume, periodic checkpoints, the final save), the TimeBudget (schedule length, calibration, out of
  time), the MetricsLogger (records, trackers, progress bar, MFU), the Validator (evaluation), the
  DivergenceGuard (non-finite loss, gradients or weights) and the FinalOutputs (samples, card, push).
  The constructor builds them all; `train()` reads as the table of contents of a run.
- Set-up order is fixed (resume state, data and tokenizer, model, precision, Accelerator, loaders, schedule,
  optimizers): the RNG draws of model init and loaders must not move, and the Accelerator comes after the
  model because `--mixed_precision auto` times that model (see precision.py).
- Run state is one `TrainState` (step, data position, tokens, the time budget's plan) that every
  checkpoint carries, so a resumed run continues exactly. Data order: see loaders.py.
- The scheduler steps once per optimizer step (it is not handed to `prepare`, which would step
  it once per process), and is registered for checkpointing.
- What one micro-batch does (backprop, zeroth-order) is a step rule (steps.py); what is minimised
  is an objective (objectives/): neither is a branch in here.
"""

import time

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, set_seed

from ..data import format_report
from ..data.tokenizer import load_tokenizer
from ..io.hub import check_hub_access
from ..io.run_dir import save_atomically
from ..model import TinyDecoderForCausalLM
from .arguments import build_config, check_model_sources
from .budget import TimeBudget
from .checkpoint import install_state_hooks
from .checkpointer import Checkpointer
from .ema import WeightEMA
from .interrupts import DivergenceGuard, StopRequest, TrainingInterrupted, resume_command
from .loaders import build_loaders, count_steps, eval_tokens
from .metrics import MetricsLogger
from .objectives import CausalLMObjective
from .optimizers import build_optimizers, schedule
from .outputs import FinalOutputs
from .precision import NAMES, candidates_for, choose_precision, time_model_step
from .report import describe_hardware
from .resume import check_resume_fits
from .state import TrainState
from .steps import build_step_rules
from .validator import Validator


class Trainer:
    """Trains a model with an objective (default: next-token cross-entropy) and saves it. `hub_exporter`: what
    `--hub_format` other than native pushes (scripts pass the Llama export; see tiny_decoder.export.llama)."""

    def __init__(self, model_args, data_args, tok_args, args, objective=None, command: str | None = None, hub_exporter=None):
        self.model_args, self.data_args, self.tok_args, self.args = model_args, data_args, tok_args, args
        self.objective, self.command, self.hub_exporter = objective or CausalLMObjective(), command, hub_exporter
        check_model_sources(model_args)
        if args.push_to_hub and args.hub_format != "native" and hub_exporter is None:
            raise ValueError(f"--hub_format {args.hub_format} needs the Trainer's hub_exporter (scripts/train.py passes it).")
        self.processes = PartialState(cpu=args.use_cpu)
        if self.processes.distributed_type == "FSDP" and (args.optim == "muon" or args.ema_decay):
            flag = "--optim muon" if args.optim == "muon" else "--ema_decay"
            raise ValueError(
                f"{flag} needs each weight whole on every process (Muon's Newton-Schulz, the average's copy), which FSDP "
                f"shards; train with DDP (a plain `accelerate launch`), or drop {flag}."
            )
        if self.processes.device.type == "cpu":
            # Tiny gradients turn denormal late in training and slow CPU matmuls several-fold; flush them.
            torch.set_flush_denormal(True)
        if args.push_to_hub and self.processes.is_main_process:
            check_hub_access()
        set_seed(args.seed)
        self.checkpointer = Checkpointer(args, self.processes)
        try:
            self.state = self._resume_state()
            self.tokenizer, self.datasets, self.reports = self._build_data()
            set_seed(args.seed)  # the initial weights depend on the seed alone, not on what ran before
            self.model = self._build_model()
            self.n_params = sum(p.numel() for p in self.model.parameters())
            self.precision, self.precision_reason = self._choose_precision()
            self.state.precision = self.precision
            self.accelerator = self._build_accelerator()
            train_dl, eval_dl, self.sampler = build_loaders(self.datasets, args, self.objective.collate, data_args.streaming)
            total, self.steps_per_epoch = count_steps(self.datasets, args, data_args.streaming, self.processes.num_processes)
            tokens = eval_tokens(self.datasets, args, data_args.block_size, data_args.streaming)
            stable = 1 - args.wsd_decay_fraction if args.lr_scheduler_type == "warmup_stable_decay" else None
            self.budget = TimeBudget(
                args.max_train_minutes, total, self.state, args.eval_steps, tokens, self._shorten_schedule, stable
            )
            model = torch.compile(self.model) if args.torch_compile else self.model
            optimizers, self.scheduler = build_optimizers(model, args, self.budget.total_steps, self.accelerator)
            # The scheduler stays out of prepare(): there it would step once per process per optimizer step.
            self.model, *optimizers, self.train_dl, eval_dl = self.accelerator.prepare(model, *optimizers, train_dl, eval_dl)
            self.accelerator.register_for_checkpointing(self.scheduler)
            self.step_rules = build_step_rules(args, self.accelerator, optimizers)
            plain = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            self.ema = WeightEMA(plain, args.ema_decay) if args.ema_decay else None
            self.validator = Validator(self.accelerator, eval_dl, args.eval_steps, args.max_eval_batches, self.ema)
            module = self.accelerator.unwrap_model(self.model)
            resumed = self.checkpointer.resume_from is not None
            self.metrics = MetricsLogger(
                args, data_args, self.accelerator, module, self.n_params, self.state, self.precision, resumed
            )
            self.guard = DivergenceGuard(args, self.accelerator, self.checkpointer, self.objective, self.scheduler)
            self.outputs = FinalOutputs(
                args, model_args, data_args, tok_args, self.objective, self.tokenizer, self.reports, command, hub_exporter
            )
        except BaseException:
            self.checkpointer.release()  # a run that could not start leaves no lock behind
            raise
        self.stop_request, self.stop_agreed = StopRequest(), False
        self.forwards_before = self.state.forward_passes
        self.data_position = (self.state.epoch, self.state.batch_in_epoch)  # of the last micro-batch drawn

    # ------------------------------------------------------------------------------------- the run
    def train(self) -> dict:
        """Optimizer steps until the schedule ends, time runs out or Ctrl-C; then `finish()`."""
        try:
            if self.checkpointer.run_finished(self.state, self.budget.total_steps):
                return self._finish_a_finished_run()
            self._begin()
            with self.stop_request:
                try:
                    eval_loss = self._loop()
                except KeyboardInterrupt as err:
                    raise self._interrupted(err) from None
            return self.finish(eval_loss)
        finally:
            self.checkpointer.release()

    def _loop(self) -> float | None:
        """For each batch a train step; at each optimizer step: budget, metrics, validation, checkpoint, stop."""
        state = self.state
        self.model.train()
        for batch in self._batches():
            self.metrics.add(*self.train_step(batch))
            if not self.accelerator.sync_gradients:
                continue  # accumulating
            self._end_step()
            record = self._training_record()
            last = state.step >= self.budget.total_steps or self.budget.out_of_time()
            validate, save = self.validator.due(state.step, last), self.checkpointer.due(state.step, last) or self.stop_agreed
            if validate or save or len(record) > 1:  # before anything is written: no result of a non-finite step
                self.guard.raise_if_diverged()
            if validate:
                record.update(self.validator.record(self.model))
                self.metrics.note(self._validation_note(record))
            self.metrics.write(record, self.budget.elapsed_s())
            if save:
                self.save_checkpoint()
            if last or self.stop_agreed:
                self._stop_note(last)
                return self.validator.last_loss

    def train_step(self, batch) -> tuple[torch.Tensor, dict]:
        """One micro-batch: the step rule (backprop, or forward passes only) applied to the objective."""
        with self.accelerator.accumulate(self.model):
            return self.step_rules.rule_for(self.state.step)(self.model, self.objective, batch)

    def evaluate(self) -> float:
        return self.validator.evaluate(self.model)

    def save_checkpoint(self):
        self.guard.raise_if_diverged()
        self.guard.check_weights(self.model, self.state.step)
        extra = [self.ema.save] if self.ema is not None else []
        return self.checkpointer.save(self.accelerator, self.model, self.tokenizer, self.state, extra)

    def finish(self, eval_loss: float | None) -> dict:
        """Save the model and tokenizer, then samples, loss curve, card and push; raise if Ctrl-C stopped the run."""
        state, minutes = self.state, self.budget.minutes()
        self.accelerator.wait_for_everyone()
        self.guard.raise_if_diverged()
        self.accelerator.end_training()
        if self.stop_agreed and state.step >= self.budget.total_steps:
            self.processes.print(f"Ctrl-C came during the last step ({state.step}): the run is complete; saving its outputs")
        elif self.stop_agreed:
            raise TrainingInterrupted(
                f"stopped by Ctrl-C at step {state.step}; checkpoint-{state.step} holds it. "
                f"Resume with: {resume_command(self.command)}"
            )
        result = {"step": state.step, "tokens": state.tokens, "eval_loss": eval_loss, "minutes": minutes, "params": self.n_params}
        if not self.processes.is_main_process:
            return result
        module = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        self.guard.check_weights(module, state.step)
        if self.ema is not None:  # training is over: the average becomes the model
            self.ema.copy_to(module)
            self.processes.print(f"saving the weight average (--ema_decay {self.args.ema_decay:g}) as the final model")
        self.checkpointer.save_model(module, self.tokenizer)
        result["samples"] = self.outputs.write(module, self.checkpointer, eval_loss, self._card_facts(minutes))
        return result

    # ------------------------------------------------------------------------------ loop pieces
    def _begin(self):
        """Load the checkpoint's states, say what will run, start the clock and the progress bar."""
        self.checkpointer.load(self.accelerator, self.state)
        resumed = self.checkpointer.resume_from
        if self.ema is not None and resumed is not None and not self.ema.load(resumed):
            self.processes.print(f"{resumed} holds no weight average: --ema_decay starts one from its weights")
            self.ema = WeightEMA(self.accelerator.unwrap_model(self.model, keep_torch_compile=False), self.args.ema_decay)
            self.validator.ema = self.ema
        args, total = self.args, self.budget.total_steps
        self.processes.print(
            f"training {total} steps ({self.steps_per_epoch or '?'} per epoch), {self.metrics.tokens_per_step:,} tokens per "
            f"step, {self.accelerator.num_processes} process(es) on {self.accelerator.device}, precision {NAMES[self.precision]}"
        )
        if args.warmup_steps >= total:
            self.processes.print(
                f"warning: --warmup_steps {args.warmup_steps} is not below the run's {total} steps: the learning "
                f"rate never reaches --learning_rate {args.learning_rate:g}; lower --warmup_steps."
            )
        self.budget.start()
        self.metrics.start(total)

    def _batches(self):
        """Micro-batches from the run's data position on, epoch after epoch; `data_position` follows them."""
        epoch, skip = self.state.epoch, self.state.batch_in_epoch
        while True:
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            loader = self.accelerator.skip_first_batches(self.train_dl, skip) if skip else self.train_dl
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            consumed = skip
            for batch in loader:
                consumed += 1
                self.data_position = (epoch, consumed)
                yield batch
            if self.data_args.streaming and consumed == 0:
                raise ValueError("The training stream yielded no batch.")
            epoch, skip = epoch + 1, 0

    def _end_step(self):
        """After an optimizer step: the schedule, the run state, Ctrl-C, the time budget, finiteness."""
        acc, state = self.accelerator, self.state
        self.scheduler.step()
        state.step += 1
        state.tokens += self.metrics.tokens_per_step
        state.epoch, state.batch_in_epoch = self.data_position
        state.forward_passes = self.forwards_before + self.step_rules.forward_passes * acc.num_processes
        self.metrics.step_done()
        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        # Several processes agree by an all-reduce, so only at logging steps (which sync anyway), not every step.
        if acc.num_processes == 1 or state.step % self.args.logging_steps == 0:
            self.stop_agreed = self.stop_request.agreed(acc)
        self.budget.after_step(acc, self.metrics.tokens_per_step)
        self.guard.check_step(state.step, self.metrics.window.loss_sum, self.step_rules.grad_norm)

    def _training_record(self) -> dict:
        record = {"step": self.state.step}
        if self.metrics.due(last=self.state.step == self.budget.total_steps):
            record.update(self.metrics.training_metrics(self.scheduler.get_last_lr()[0], self.step_rules.pop_stats()))
        return record

    def _validation_note(self, record: dict) -> str:
        note = f"step {self.state.step}: validation loss {record['eval_loss']:.4f}, perplexity {record['eval_ppl']:.2f}"
        if "eval_loss_ema" in record:
            note += f"; weight average {record['eval_loss_ema']:.4f}, perplexity {record['eval_ppl_ema']:.2f}"
        return note

    def _stop_note(self, last: bool):
        if last and self.state.step < self.budget.total_steps:
            self.metrics.note(f"stopping at step {self.state.step}: max_train_minutes={self.args.max_train_minutes} reached")
        self.metrics.close()

    def _shorten_schedule(self, planned: int, message: str):
        """The time budget's plan: the learning-rate schedule now ends at `planned`."""
        multiplier = schedule(self.args, planned)
        self.scheduler.lr_lambdas = [multiplier for _ in self.scheduler.lr_lambdas]
        self.metrics.set_total(planned)
        self.metrics.note(message)

    def _interrupted(self, err: KeyboardInterrupt) -> KeyboardInterrupt:
        if isinstance(err, TrainingInterrupted):
            return err
        last = self.checkpointer.last_checkpoint()
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        return TrainingInterrupted(f"interrupted at step {self.state.step}; {where}. Resume with: {resume_command(self.command)}")

    def _finish_a_finished_run(self) -> dict:
        """Resumed from the checkpoint that ends the run: nothing to do, or only the final outputs to write."""
        if self.checkpointer.outputs_saved(self.state, self.budget.total_steps):
            self.accelerator.end_training()
            state = self.state
            return {
                "step": state.step,
                "tokens": state.tokens,
                "eval_loss": None,
                "minutes": 0.0,
                "params": self.n_params,
                "finished_already": True,
            }
        self.processes.print(
            f"{self.checkpointer.resume_from} ends the run, but the run's final model was never saved: saving it now"
        )
        self._begin()
        return self.finish(self.evaluate())

    def _card_facts(self, minutes: float) -> dict:
        reason = f" (chosen by --mixed_precision auto: {self.precision_reason})" if self.precision_reason else ""
        return {
            "steps": self.state.step,
            "tokens": self.state.tokens,
            "batch_tokens": self.metrics.tokens_per_step,
            "minutes": minutes,
            "params": self.n_params,
            "mixed_precision": NAMES[self.precision] + reason,
            "hardware": describe_hardware(self.accelerator) + self.metrics.utilisation(),
            "records": self.metrics.log.read(),
        }

    # ---------------------------------------------------------------------------- set-up pieces
    def _resume_state(self) -> TrainState:
        state, saved = TrainState(), self.checkpointer.resumed_state()
        if saved is not None:
            state.load_state_dict(saved)
            check_resume_fits(self.checkpointer.resume_from, state, self.model_args, self.data_args.block_size)
        state.block_size = self.data_args.block_size
        return state

    def _build_data(self):
        """(tokenizer, {"train", "validation"} datasets, reports), through the objective. The main process builds
        caches and the tokenizer first; the others reuse them."""
        data_args, tok_args, objective = self.data_args, self.tok_args, self.objective
        tok_dir = self.checkpointer.out_dir / "tokenizer"
        if self.model_args.model_name_or_path and not tok_args.tokenizer_name:
            tok_args.tokenizer_name = self.model_args.model_name_or_path  # continue with the model's own tokenizer
        t_data = time.time()
        with self.processes.main_process_first():
            raw = objective.load_data(data_args)
            if tok_dir.exists() and (self.checkpointer.resume_from or not self.processes.is_main_process):
                tokenizer = load_tokenizer(str(tok_dir), data_args.block_size)
            else:
                tokenizer = objective.build_tokenizer(tok_args, data_args, raw)
                if self.processes.is_main_process:
                    save_atomically(str(tok_dir), tokenizer.save_pretrained)
            datasets, reports = objective.build_datasets(data_args, tokenizer, raw)
        if reports:
            self.processes.print(format_report(reports))
        self.processes.print(f"data ready in {time.time() - t_data:.1f} s")
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
        if self.args.push_to_hub and self.hub_exporter is not None:  # refused before training, not after it
            self.hub_exporter.check(model.config)
        signature, resumed = self.objective.signature(), self.checkpointer.resume_from
        if resumed is not None and self.state.objective not in (None, signature):
            self.processes.print(f"warning: {resumed} was trained with {self.state.objective}; this run uses {signature}")
        self.state.objective = signature
        c = model.config
        self.processes.print(
            f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {c.num_hidden_layers} "
            f"layers, hidden {c.hidden_size}, {c.position_embedding}/{c.norm}/{c.hidden_act}"
        )
        return model

    def _choose_precision(self) -> tuple[str, str]:
        """(precision, why): as given, the resumed run's own, or (auto) the fastest on this machine, timed on the
        model's eager step (the compiled step keeps the ratio roughly). Every process times; the main process's
        choice is the one all use."""
        args, device = self.args, self.processes.device
        if args.mixed_precision != "auto":
            return args.mixed_precision, ""
        if self.state.precision is not None:  # a resumed auto run keeps its precision (and optimizer scaler)
            return self.state.precision, f"kept from {self.checkpointer.resume_from}"
        t0 = time.time()
        with_grad = args.optim != "zeroth_order" or args.zo_hybrid != "none"
        run_step = time_model_step(self.model, args.per_device_train_batch_size, self.data_args.block_size, device, with_grad)
        result = [choose_precision(candidates_for(device, zeroth_order=args.optim == "zeroth_order"), run_step)]
        if self.processes.num_processes > 1:
            broadcast_object_list(result)
        self.processes.print(f"--mixed_precision auto chose {result[0].reason()} ({time.time() - t0:.0f} s)")
        return result[0].choice, result[0].reason()

    def _build_accelerator(self) -> Accelerator:
        args = self.args
        accelerator = Accelerator(
            cpu=args.use_cpu,
            mixed_precision=self.precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=None if args.report_to == "none" else args.report_to,
            project_dir=args.output_dir,
        )
        install_state_hooks(accelerator)
        return accelerator
