"""The training loop, written on accelerate.Accelerator.

One loop for every device: `python` or `accelerate launch` on CPU, one or many GPUs (DDP, or
FSDP through an accelerate config file) and Apple MPS. Design choices:
- Data order is a pure function of (seed, epoch): every process draws the same permutation
  and accelerate gives each its share, so N processes see the batches that one process with
  N-fold gradient accumulation sees, and a resumed run sees what an uninterrupted one saw.
- The scheduler steps once per optimizer step (it is not handed to `prepare`, which would step
  it once per process), and is registered for checkpointing.
- Checkpoints are atomic and verified (see checkpoint.py); the data position is part of them.
"""

import math
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from .. import TinyDecoderForCausalLM
from ..data import clean_and_split, format_report, hub_is_reachable
from ..hub import render_model_card
from ..data.tokenizer import get_tokenizer, load_tokenizer
from .arguments import build_config, check_model_sources
from .budget import CALIBRATION, plan_total_steps
from .checkpoint import install_state_hooks, list_checkpoints, resolve_checkpoint, save_checkpoint, verify_checkpoint
from .objectives import CausalLMObjective
from .optimizers import build_optimizers, lr_lambda, optimizer_card_section
from .steps import build_steps
from .report import (ActivationNorms, MetricsLog, describe_data, describe_hardware, device_peak_flops, flops_per_token,
                     plot_loss_curve)
from .run_dir import check_output_dir, clear_run, save_atomically


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, with a message that says what was saved and how to go on."""


class StopRequest:
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current optimizer step and save a
    checkpoint there; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def agreed(self, accelerator) -> bool:
        """Every process stops at the same step, or none does (a signal reaches them at different times).
        With several processes this is a collective: every process must call it at the same step."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


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


def check_hub_access(args):
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


@torch.no_grad()
def evaluate(model, dataloader, accelerator, max_batches=None) -> float:
    was_training = model.training
    model.eval()
    losses = []
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"], attention_mask=batch.get("attention_mask"),
                     use_cache=False).loss
        losses.append(accelerator.gather_for_metrics(loss.detach().float().repeat(batch["input_ids"].shape[0])))
    model.train(was_training)
    return torch.cat(losses).mean().item() if losses else float("nan")


def generate_samples(model, tokenizer, prompt_ids, n, max_new_tokens, seed, with_prompt=True) -> list[str]:
    """n sampled continuations of `prompt_ids` (the objective's prompt: a story starts after an EOS, a chat
    answer after the template); `with_prompt=False` returns only the generated part (a chat model's answer)."""
    if n <= 0:
        return []
    model.eval()
    device = next(model.parameters()).device
    ids = prompt_ids
    torch.manual_seed(seed)
    out = model.generate(
        torch.tensor([ids] * n, device=device), attention_mask=torch.ones(n, len(ids), dtype=torch.long, device=device),
        do_sample=True, top_k=50, top_p=0.95, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    start = 1 if with_prompt else len(ids)
    return [tokenizer.decode(o[start:], skip_special_tokens=True) for o in out]


def save_final(model, tokenizer, output_dir: str):
    """save_pretrained of model and tokenizer into a temporary folder, then moved into output_dir."""
    save_atomically(output_dir, model.save_pretrained, tokenizer.save_pretrained)


def resume_command(command: str | None) -> str:
    base = command or "python " + " ".join(sys.argv)
    base = base.split(" --resume_from_checkpoint")[0]
    return f"{base} --resume_from_checkpoint latest"


def run_training(model_args, data_args, tok_args, args, command: str | None = None, objective=None) -> dict:
    """Train and save. `objective` (default: next-token cross-entropy) is the loss the loop calls, e.g.
    a `DistillationObjective`; see objective.py."""
    objective = objective or CausalLMObjective()
    check_model_sources(model_args)
    accelerator = Accelerator(
        cpu=args.use_cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
    )
    main = accelerator.is_main_process
    if accelerator.device.type == "cpu":
        # Tiny gradients turn denormal late in training and slow CPU matmuls several-fold; flush them.
        torch.set_flush_denormal(True)
    say = accelerator.print
    if args.push_to_hub and main:
        check_hub_access(args)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    # Every process checks (so all raise alike); the main process alone clears and creates.
    old_run = check_output_dir(args.output_dir, args.overwrite_output_dir, bool(args.resume_from_checkpoint))
    accelerator.wait_for_everyone()
    if main:
        if old_run:
            say(f"--overwrite_output_dir: deleting the run in {out_dir} ({len(old_run)} entries)")
            clear_run(old_run)
        out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    install_state_hooks(accelerator)

    resume_from, state = None, {"step": 0, "epoch": 0, "batch_in_epoch": 0, "tokens": 0}
    if args.resume_from_checkpoint:
        resume_from = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
        state = verify_checkpoint(resume_from)

    # Data and tokenizer. The main process builds caches and the tokenizer first; the others reuse them.
    tok_dir = out_dir / "tokenizer"
    if model_args.model_name_or_path and not tok_args.tokenizer_name:
        tok_args.tokenizer_name = model_args.model_name_or_path  # continue with the model's own tokenizer
    t_data = time.time()
    with accelerator.main_process_first():
        raw = objective.load_data(data_args)
        if tok_dir.exists() and (resume_from or not main):
            tokenizer = load_tokenizer(str(tok_dir), data_args.block_size)
        else:
            train_docs = clean_and_split(raw, data_args)[0]["train"] if not tok_args.tokenizer_name else None
            tokenizer = get_tokenizer(tok_args, train_docs, data_args.text_column, data_args.block_size)
            objective.setup_tokenizer(tokenizer)
            if main:
                save_atomically(str(tok_dir), tokenizer.save_pretrained)
        blocks, reports = objective.build_datasets(data_args, tokenizer, raw)
    if reports:
        say(format_report(reports))
    say(f"data ready in {time.time() - t_data:.1f} s")

    set_seed(args.seed)  # the initial weights depend on the seed alone, not on what ran before
    if model_args.model_name_or_path:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, attn_implementation=model_args.attn_implementation)
        objective.prepare(model, tokenizer, accelerator, compile=args.torch_compile)  # may grow the vocabulary
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but {model_args.model_name_or_path!r} only "
                             f"{model.config.vocab_size} embeddings; use the model's own tokenizer.")
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and data_args.block_size > context:
            raise ValueError(f"block_size={data_args.block_size} is longer than {model_args.model_name_or_path!r}'s "
                             f"context (max_position_embeddings={context}); pass --block_size {context} or less.")
    else:
        config = build_config(model_args, tokenizer, data_args.block_size)
        model = TinyDecoderForCausalLM._from_config(config, attn_implementation=model_args.attn_implementation)
        objective.prepare(model, tokenizer, accelerator, compile=args.torch_compile)
    config = model.config
    if resume_from is not None and state.get("objective", objective.signature()) != objective.signature():
        say(f"warning: {resume_from} was trained with {state['objective']}; this run uses {objective.signature()}")
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e6:.2f} M parameters, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.position_embedding}/{config.norm}/{config.hidden_act}")

    streaming = data_args.streaming
    sampler = None if streaming else EpochSampler(len(blocks["train"]), args.seed)
    # Loaders get generators of their own: creating an iterator would otherwise draw from the global
    # RNG, so a resumed run's dropout masks would differ from an uninterrupted run's.
    train_dl = DataLoader(blocks["train"], batch_size=args.per_device_train_batch_size, sampler=sampler,
                          collate_fn=objective.collate, drop_last=True, num_workers=args.dataloader_num_workers,
                          generator=torch.Generator().manual_seed(args.seed))
    eval_dl = DataLoader(blocks["validation"], batch_size=args.per_device_eval_batch_size, collate_fn=objective.collate,
                         generator=torch.Generator().manual_seed(args.seed))

    if streaming:
        if args.max_steps <= 0:
            raise ValueError("Streaming data has no known length: set --max_steps.")
        total_steps, steps_per_epoch = args.max_steps, None
    else:
        # Batches each process sees per epoch (drop_last, then sharded across processes).
        batches = len(blocks["train"]) // args.per_device_train_batch_size // accelerator.num_processes
        if batches == 0:
            raise ValueError(
                f"{len(blocks['train'])} training blocks make no full batch of {args.per_device_train_batch_size} "
                f"per process on {accelerator.num_processes} process(es); lower --per_device_train_batch_size."
            )
        steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    if state.get("planned_total_steps") and state.get("planned_from") == total_steps and args.max_train_minutes:
        total_steps = state["planned_total_steps"]  # the time budget's plan, made earlier in this run

    if args.torch_compile:
        model = torch.compile(model)
    optimizers, scheduler = build_optimizers(model, args, total_steps, accelerator)  # two for a hybrid run
    # The scheduler stays out of prepare(): there it would step once per process per optimizer step.
    model, *optimizers, train_dl, eval_dl = accelerator.prepare(model, *optimizers, train_dl, eval_dl)
    accelerator.register_for_checkpointing(scheduler)
    steps = build_steps(args, accelerator, optimizers, scheduler)
    norms = ActivationNorms(accelerator.unwrap_model(model)) if args.log_activation_norms else None

    if resume_from is not None:
        if state["step"] >= total_steps:
            say(f"{resume_from} is at step {state['step']}, and this run has {total_steps} steps: it is finished, nothing "
                f"to do. To train longer, resume with a larger --max_steps (or --num_train_epochs).")
            accelerator.end_training()
            return {"step": state["step"], "tokens": state["tokens"], "eval_loss": None, "minutes": 0.0,
                    "params": n_params, "finished_already": True}
        accelerator.load_state(str(resume_from))
        say(f"resumed from {resume_from} at step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})")

    tokens_per_step = data_args.block_size * args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    fpt = flops_per_token(n_params, config, data_args.block_size)
    peak = device_peak_flops(accelerator.device)
    log = MetricsLog(args.output_dir, enabled=main, resume_step=state["step"] if resume_from is not None else None)
    if args.report_to != "none":
        scalar = {k: v for k, v in {**vars(args), **vars(data_args), **config.to_dict()}.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("tiny-decoder", config=scalar)
    say(f"training {total_steps} steps ({steps_per_epoch or '?'} per epoch), {tokens_per_step:,} tokens per step, "
        f"{accelerator.num_processes} process(es) on {accelerator.device}, precision {args.mixed_precision}")

    progress = {k: state[k] for k in ("step", "epoch", "batch_in_epoch", "tokens")}
    progress["forward_passes"] = state.get("forward_passes", 0)  # batches forwarded, all processes (loss vs compute)
    progress["objective"] = objective.signature()
    for k in ("planned_total_steps", "planned_from"):
        if k in state:
            progress[k] = state[k]
    t_start = time.time()
    ctx = dict(accelerator=accelerator, model=model, steps=steps, scheduler=scheduler, norms=norms, train_dl=train_dl,
               eval_dl=eval_dl, sampler=sampler, args=args, total_steps=total_steps, tokens_per_step=tokens_per_step,
               log=log, fpt=fpt, peak=peak, streaming=streaming, t_start=t_start, objective=objective,
               eval_tokens=(min(len(blocks["validation"]), (args.max_eval_batches or 10**9) * args.per_device_eval_batch_size)
                            * data_args.block_size if not streaming else 0))
    with StopRequest() as stop:
        try:
            eval_loss, stopped = train_steps(progress, stop, **ctx)
        except KeyboardInterrupt as err:
            if isinstance(err, TrainingInterrupted):
                raise
            saved = list_checkpoints(args.output_dir)
            where = f"the last checkpoint is {saved[-1]}" if saved else "no checkpoint was written yet"
            raise TrainingInterrupted(f"interrupted at step {progress['step']}; {where}. "
                                      f"Resume with: {resume_command(command)}") from None
    step, tokens = progress["step"], progress["tokens"]
    minutes = (time.time() - t_start) / 60
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if stopped:
        raise TrainingInterrupted(f"stopped by Ctrl-C at step {step}; checkpoint-{step} holds it. "
                                  f"Resume with: {resume_command(command)}")

    result = {"step": step, "tokens": tokens, "eval_loss": eval_loss, "minutes": minutes, "params": n_params}
    if main:
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        unwrapped.config.use_cache = True
        save_final(unwrapped, tokenizer, args.output_dir)
        samples = generate_samples(unwrapped, tokenizer, objective.prompt_ids(tokenizer, args.sample_prompt),
                                   args.num_samples, args.max_new_tokens, args.seed, objective.samples_include_prompt)
        for i, s in enumerate(samples):
            print(f"\n--- sample {i + 1} ---\n{s}")
        plot_loss_curve(log.read(), str(out_dir / "loss_curve.png"))
        dataset_name, dataset_desc = describe_data(data_args, reports)
        card = render_model_card(unwrapped.config, {
            "repo": args.hub_model_id or args.output_dir,
            "local": not args.hub_model_id,
            "title": (args.hub_model_id or out_dir.resolve().name).split("/")[-1],
            "dataset_name": dataset_name,
            "dataset_desc": dataset_desc,
            "tokenizer_desc": tok_args.tokenizer_name or f"byte-level BPE, {len(tokenizer)} tokens, trained on the training split",
            "steps": step, "tokens": tokens, "batch_tokens": tokens_per_step,
            "learning_rate": args.learning_rate, "lr_scheduler_type": args.lr_scheduler_type, "warmup_steps": args.warmup_steps,
            "mixed_precision": "fp32" if args.mixed_precision == "no" else args.mixed_precision, "hardware": describe_hardware(accelerator),
            "minutes": minutes, "eval_loss": eval_loss, "eval_ppl": math.exp(min(eval_loss, 50)),
            "command": command or " ".join(sys.argv), "prompt": args.sample_prompt, "seed": args.seed,
            "samples": samples, "params": n_params, "method": objective.card_section() + optimizer_card_section(args),
            "base_model": model_args.model_name_or_path,
            "tags": objective.tags + (("zeroth-order",) if args.optim == "zeroth_order" else ()),
        })
        (out_dir / "README.md.tmp").write_text(card)
        (out_dir / "README.md.tmp").replace(out_dir / "README.md")
        say(f"\nsaved model, tokenizer, model card and loss curve to {out_dir}; validation loss {eval_loss:.4f} "
            f"after {step} steps, {tokens:,} tokens, {minutes:.1f} min")
        if args.push_to_hub:
            push_final(unwrapped, tokenizer, card, args)
        result["samples"] = samples
    return result


def train_steps(progress, stop, *, accelerator, model, steps, scheduler, norms, train_dl, eval_dl, sampler, args,
                total_steps, tokens_per_step, log, fpt, peak, streaming, t_start, eval_tokens, objective):
    """Optimizer steps until the schedule ends, time runs out or Ctrl-C; returns (last eval loss, stopped by user).

    `progress` (step, epoch, batch_in_epoch, tokens) is updated in place, so a caller that catches an
    interrupt knows how far it got.
    """
    main = accelerator.is_main_process
    step, epoch, skip, tokens = progress["step"], progress["epoch"], progress["batch_in_epoch"], progress["tokens"]
    forwards_before = progress["forward_passes"]
    bar = tqdm(total=total_steps, initial=step, disable=not main, dynamic_ncols=True, desc="train")
    t_log = time.time()
    loss_sum, micro, window = torch.zeros((), device=accelerator.device), 0, 0
    extra_sums = {}  # the objective's own scalars (e.g. ce, kl), averaged over the logging window
    eval_loss, stopped, calib = None, False, None
    # Evaluate without torch.compile: a forward-only graph and a short last batch would each cost a
    # compile, more than compiling saves on a few evaluations. (FSDP1's wrapper must stay in place.)
    eval_model = model if accelerator.distributed_type == "FSDP" else accelerator.unwrap_model(model, keep_torch_compile=False)
    model.train()
    done = step >= total_steps
    while not done:
        if sampler is not None:
            sampler.set_epoch(epoch)
        dl = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(epoch)
        batch_in_epoch, skip = skip, 0
        for batch in dl:
            batch_in_epoch += 1
            with accelerator.accumulate(model):
                loss, extras = steps.at(step)(model, objective, batch)  # backprop, or forward passes only
            loss_sum += loss.detach().float()
            for k, v in extras.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + v.detach().float()
            micro += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            window += 1
            tokens += tokens_per_step
            progress.update(step=step, epoch=epoch, batch_in_epoch=batch_in_epoch, tokens=tokens,
                            forward_passes=forwards_before + steps.forward_passes * accelerator.num_processes)
            bar.update(1)
            # Several processes agree by an all-reduce, so only at logging steps (which sync anyway), not every step.
            if accelerator.num_processes == 1 or step % args.logging_steps == 0:
                stopped = stop.agreed(accelerator)
            if args.max_train_minutes and "planned_total_steps" not in progress and total_steps > step:
                if calib is None and step >= CALIBRATION[0]:
                    calib = (step, time.time())
                elif calib is not None and step - calib[0] >= CALIBRATION[1] - CALIBRATION[0]:
                    total_steps = plan_schedule(progress, step, total_steps, calib, t_start, args, scheduler, bar,
                                                tokens_per_step, eval_tokens, accelerator)
            record = {"step": step}
            if step % args.logging_steps == 0 or step == total_steps:
                now = time.time()
                record.update(loss=accelerator.reduce(loss_sum / micro, reduction="mean").item(),
                              lr=scheduler.get_last_lr()[0], tokens=tokens,
                              tokens_per_s=tokens_per_step * window / max(now - t_log, 1e-9))
                for k, v in extra_sums.items():
                    record[k] = accelerator.reduce(v / micro, reduction="mean").item()
                record.update(steps.pop_stats(), **(norms.pop() if norms is not None else {}))
                if peak:
                    record["mfu"] = record["tokens_per_s"] * fpt / (peak * accelerator.num_processes)
                t_log, loss_sum, micro, window, extra_sums = now, loss_sum * 0, 0, 0, {}
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}", **({"mfu": f"{record['mfu']:.1%}"} if peak else {}))
            out_of_time = args.max_train_minutes is not None and (time.time() - t_start) / 60 >= args.max_train_minutes
            last = step >= total_steps or out_of_time
            if step % args.eval_steps == 0 or last:
                eval_loss = evaluate(eval_model, eval_dl, accelerator, args.max_eval_batches)
                record.update(eval_loss=eval_loss, eval_ppl=math.exp(min(eval_loss, 50)))
                bar.write(f"step {step}: validation loss {eval_loss:.4f}, perplexity {record['eval_ppl']:.2f}")
            if len(record) > 1:
                record["forward_passes"] = progress["forward_passes"]
                log.write({**record, "elapsed_s": round(time.time() - t_start, 2)})
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            if step % args.save_steps == 0 or last or stopped:
                ckpt = save_checkpoint(accelerator, args.output_dir, dict(progress), args.save_total_limit, model=model)
                if args.push_to_hub and args.hub_strategy == "checkpoint" and main:
                    push_checkpoint(ckpt, args)
            if last or stopped:
                done = True
                if out_of_time and step < total_steps:
                    bar.write(f"stopping at step {step}: max_train_minutes={args.max_train_minutes} reached")
                break
        else:
            epoch += 1
            if streaming and batch_in_epoch == 0:
                raise ValueError("The training stream yielded no batch.")
    bar.close()
    return eval_loss, stopped


def plan_schedule(progress, step, total_steps, calib, t_start, args, scheduler, bar, tokens_per_step, eval_tokens,
                  accelerator) -> int:
    """Shorten the schedule to what fits in --max_train_minutes at the speed measured so far (see budget.py)."""
    now = time.time()
    per_step = (now - calib[1]) / (step - calib[0])
    eval_s = eval_tokens / (3 * tokens_per_step / per_step)  # a forward costs about a third of a training step
    planned = plan_total_steps(step, total_steps, now - t_start, per_step, args.max_train_minutes * 60, args.eval_steps, eval_s)
    if accelerator.num_processes > 1:  # every process must take the same number of steps
        # accelerate's reduce has no "min" (it would sum): take the max of the negated plans
        planned = -int(accelerator.reduce(torch.tensor([-planned], device=accelerator.device), reduction="max").item())
    progress.update(planned_total_steps=planned, planned_from=total_steps)
    if planned < total_steps:
        scheduler.lr_lambdas = [lr_lambda(args.lr_scheduler_type, args.warmup_steps, planned, args.min_lr_ratio)
                                for _ in scheduler.lr_lambdas]
        bar.total = planned
        bar.write(f"max_train_minutes={args.max_train_minutes}: at {per_step:.2f} s per step, {planned} of {total_steps} "
                  f"steps fit; the learning-rate schedule now ends at step {planned}")
    return planned


def push_final(model, tokenizer, card: str, args):
    from huggingface_hub import ModelCard

    model.push_to_hub(args.hub_model_id, private=args.hub_private_repo)
    tokenizer.push_to_hub(args.hub_model_id, private=args.hub_private_repo)
    ModelCard(card).push_to_hub(args.hub_model_id)


def push_checkpoint(folder, args):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
    api.upload_folder(repo_id=args.hub_model_id, folder_path=str(folder), path_in_repo="last-checkpoint",
                      commit_message=f"checkpoint {folder.name}")
