"""The trainer: one loop, single process or DistributedDataParallel under ``torchrun``.

Mixed precision on CUDA, gradient accumulation, SGD with linear warm-up and step or cosine decay,
checkpoints every N steps and on interrupt (SIGINT/SIGTERM), exact resume, a progress bar with
loss / lr / images per second, a CSV log (and TensorBoard when installed), periodic validation on every
``val_data`` set under its own protocol that keeps the best checkpoint, and optional distillation from a
teacher's outputs on the training images (learning without forgetting: ``distill_from``).
"""

from __future__ import annotations

import csv
import os
import signal
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..backends.torch_backend import TorchBackend, avoid_mmap_churn
from ..core.files import check_folder_can_be_made, make_output_folder
from ..errors import EdgefaceError, ModelFileError, OptionError
from ..eval.validation import ValidationSet, headline, validation_set
from ..models.checkpoint import is_baked, read_torch_file, save_checkpoint
from ..models.registry import create_model, default_spec
from .config import TrainConfig, learning_rate
from .dataset import ResumableSampler, collate
from .mining import HardImageMiner
from .training_data import UNLABELLED_FACES, recipe_weights, teacher_paths, training_objective, training_set

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# what a run's checkpoint holds beside the weights, all needed to continue it exactly
RESUME_KEYS = ("state_dict", "optimizer", "scaler", "torch_rng", "step", "best_ap")


class CsvLog:
    """The run's CSV log: rows by column name, each flushed as it is written. A resumed run that logs columns the
    file lacks (a recipe that adds distillation or a validation set) rewrites it once with them appended to the
    header, so every row stays under its own names."""

    def __init__(self, path: Path, columns: list[str]):
        if not path.exists():
            self.file = open(path, "w", newline="")
            self.writer = csv.DictWriter(self.file, columns, restval="")
            self.writer.writeheader()
            return
        with open(path, newline="") as old:
            reader = csv.DictReader(old)
            rows, header = list(reader), list(reader.fieldnames or [])
        missing = [c for c in columns if c not in header]
        if missing:
            with open(path, "w", newline="") as new:
                rewriter = csv.DictWriter(new, header + missing, restval="")
                rewriter.writeheader()
                rewriter.writerows(rows)
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, header + missing, restval="")

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg.check()
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world_size > 1
        if torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
            avoid_mmap_churn()
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        self.spec = default_spec(cfg.model)
        # channels-last: 3x faster depthwise convolutions with autograd on CPU, and what tensor cores want
        self.model = create_model(cfg.model).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        if cfg.init:
            init = recipe_weights(cfg, cfg.init)
            if not cfg.freeze_bn and is_baked(init):  # batch statistics would replace the folded identities
                raise OptionError(f"init {cfg.init} has its BatchNorm folded into the convolutions (weights read "
                                  "back from an ONNX export): train it with freeze_bn: true")
            self.model.load_state_dict(init.state_dict())
        if cfg.backbone_weights:
            from ..models.backbones import load_imagenet

            load_imagenet(self.model.backbone, cfg.backbone_weights)
        self.fixed = self.fixed_modules()
        for module in self.fixed:
            module.requires_grad_(False)
        self.net = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=None if self.device.type == "cpu"
                                                              else [self.device.index])
                    if self.distributed else self.model)
        self.objective = training_objective(cfg)
        self.teachers = [self._teacher(path) for path in teacher_paths(cfg)]
        self.kept = self._kept_weights()
        self.ema = self._moving_average()
        self.terms = (self.objective.terms + (tuple(f"distill_{t}" for t in self.objective.terms)
                                              if self.teachers else ()) + (("keep_init",) if self.kept else ()))
        self.optimizer = torch.optim.SGD(self.param_groups(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.best_ap = -1.0
        self.out = Path(cfg.output)
        self.stop_signal: Optional[int] = None  # set by SIGINT/SIGTERM: stop after the current step
        self.validation_cut = False  # a stop signal cut a validation pass short
        self.diverged = False
        self.miner: Optional[HardImageMiner] = None

    def _teacher(self, path: str) -> torch.nn.Module:
        """The frozen model to distil from: same anchors as the student, so their outputs correspond."""
        from ..models.checkpoint import load_any_checkpoint
        from ..models.registry import get_entry

        teacher, spec = load_any_checkpoint(path)
        if spec.anchors != self.spec.anchors or get_entry(spec.name).family != get_entry(self.spec.name).family:
            raise OptionError(f"distill_from {path} is {spec.name}, whose outputs do not correspond to "
                              f"{self.spec.name}'s anchors: distil from a model of the same family and anchors")
        # (torch's type stubs lack Module.to's memory_format)
        teacher = teacher.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        return teacher.eval().requires_grad_(False)

    def _kept_weights(self) -> dict[torch.nn.Parameter, tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Each trainable weight's `init` value and Fisher information (None: 1), when the recipe keeps them."""
        cfg = self.cfg
        if not cfg.keep_init_weight:
            if cfg.keep_init_fisher:
                raise OptionError("keep_init_fisher is set but keep_init_weight is 0: give keep_init_weight (e.g. 1)")
            return {}
        if not cfg.init:
            raise OptionError("keep_init_weight keeps the weights near `init`: the recipe needs init")
        fisher = {}
        if cfg.keep_init_fisher:
            from .fisher import load_fisher

            fisher = load_fisher(cfg.keep_init_fisher, self.model)
        return {p: (p.detach().clone(), fisher[name].to(self.device) if fisher else None)
                for name, p in self.model.named_parameters() if p.requires_grad and (not fisher or name in fisher)}

    def _moving_average(self) -> Optional[torch.optim.swa_utils.AveragedModel]:
        """The ``ema_decay`` average of the weights (BatchNorm statistics included), or None without one."""
        decay = self.cfg.ema_decay
        if not decay:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def weights(self) -> torch.nn.Module:
        """The model a checkpoint holds and validation scores: the moving average if the recipe keeps one."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def _keep_init_penalty(self) -> torch.Tensor:
        """``keep_init_weight x sum F (w - w_init)^2`` over the kept weights (what :meth:`_pull_to_init` minimises)."""
        total = cast(torch.Tensor, sum(((p - start) ** 2 * (1.0 if fisher is None else fisher)).sum()
                                       for p, (start, fisher) in self.kept.items()))
        return self.cfg.keep_init_weight * total

    @torch.no_grad()
    def _pull_to_init(self) -> None:
        """The penalty's proximal step after each optimizer step: ``w <- w_init + (w - w_init) / (1 + 2 lr k F)``.
        Exact for the quadratic, so stable however large F is (a PReLU slope's reaches thousands, where a gradient
        step of lr 1e-3 would overshoot), and kept out of the gradient, whose norm clipping it would dominate."""
        for group in self.optimizer.param_groups:  # each at its own learning rate (a model's lr multipliers)
            rate = 2.0 * group["lr"] * self.cfg.keep_init_weight
            for p in group["params"]:
                if p in self.kept:
                    start, fisher = self.kept[p]
                    p.sub_(start).div_(1.0 + rate * (1.0 if fisher is None else fisher)).add_(start)

    @torch.no_grad()
    def _taught(self, x: torch.Tensor, teacher: torch.Tensor, outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The teachers' outputs on batch `x`, each image's from its own teacher (`teacher`: index per image, -1:
        none, whose rows stay zero and are not distilled); shaped like the student's `outputs`."""
        taught = [torch.zeros_like(o) for o in outputs]
        for index, model in enumerate(self.teachers):
            rows = (teacher == index).nonzero().squeeze(1)
            if len(rows):
                for into, out in zip(taught, model(x[rows])):
                    into.index_copy_(0, rows, out.to(into.dtype))
        return taught

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, grouped by the model's learning-rate multipliers (e.g. HR's res3 branch at 0.1)."""
        multipliers: dict[str, float] = getattr(self.model, "lr_multipliers", dict)()
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                mult = next((m for prefix, m in multipliers.items() if name.startswith(prefix)), 1.0)
                groups.setdefault(mult, []).append(p)
        return [{"params": params, "multiplier": mult} for mult, params in groups.items()]

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    def save(self, path: Path) -> None:
        if self.rank == 0:
            extra: dict[str, Any] = {"miner": self.miner.state_dict()} if self.miner is not None else {}
            if self.ema is not None:  # the checkpoint's weights are the average; training resumes from these
                extra.update(trained_state_dict=self.model.state_dict(), ema_updates=self.ema.n_averaged)
            save_checkpoint(self.weights, self.spec, path, step=self.step, best_ap=self.best_ap, **extra,
                            optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                            config=asdict(self.cfg), torch_rng=torch.get_rng_state())

    def resume(self, path: Optional[Path] = None) -> bool:
        """Continue from `path` (default: the run's last.pt, if any). Returns whether it resumed."""
        path = path or self.last_path
        if not path.exists():
            return False
        try:
            payload = read_torch_file(str(path))
        except ModelFileError as exc:
            why = type(exc.__cause__).__name__ if exc.__cause__ else exc
            raise ModelFileError(f"training cannot resume from {path}: it is not a readable checkpoint ({why}); move "
                                 "it aside to keep it, then start over with --no-resume or train into another "
                                 "--output") from exc
        spec = payload.get("spec") if isinstance(payload, dict) else None
        saved = spec.get("name") if isinstance(spec, dict) else None
        if saved != self.spec.name:
            held = f"a checkpoint of {saved}" if saved else "no edgeface training checkpoint"
            raise ValueError(f"{path} holds {held} but this run trains {self.spec.name}: give the run its own "
                             "--output folder, or start over with --no-resume")
        missing = [key for key in RESUME_KEYS if key not in payload]
        if missing:
            raise ModelFileError(f"training cannot resume from {path}: it holds {saved}'s weights without the "
                                 f"training state ({', '.join(missing)} missing), as a finished or converted model "
                                 "does; to start from its weights set `init` to it and train into another --output")
        self.model.load_state_dict(payload.get("trained_state_dict", payload["state_dict"]))
        if self.ema is not None and "trained_state_dict" in payload:
            self.ema.module.load_state_dict(payload["state_dict"])
            self.ema.n_averaged.fill_(payload["ema_updates"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["torch_rng"])
        self.step, self.best_ap = int(payload["step"]), float(payload["best_ap"])
        if "miner" in payload:
            self.miner = HardImageMiner(len(payload["miner"]["well_detected"]), seed=self.cfg.seed)
            self.miner.load_state_dict(payload["miner"])
        return True

    def fixed_modules(self) -> list[torch.nn.Module]:
        """The modules training leaves as they are: every BatchNorm layer with ``freeze_bn``, and the parts the
        recipe's ``freeze`` names (each must name one of the model's modules)."""
        named = dict(self.model.named_modules())
        for name in self.cfg.freeze:
            if not name or name not in named:
                top = ", ".join(child for child, _ in self.model.named_children())
                raise OptionError(f"freeze: {self.cfg.model} has no part {name!r}; its parts are {top}")
        batch_norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        return (batch_norms if self.cfg.freeze_bn else []) + [named[name] for name in self.cfg.freeze]

    def train_mode(self) -> None:
        """Training mode, with the fixed modules (``freeze_bn``, ``freeze``) kept in eval mode."""
        self.model.train()
        for module in self.fixed:
            module.eval()

    # -- validation -------------------------------------------------------------------------------
    def validate(self, sets: list[ValidationSet]) -> Optional[dict[str, float]]:
        """Every metric of every validation set, one pass per image; None when a stop signal arrived meanwhile."""
        from ..eval.validation import score

        self.weights.eval()
        backend = TorchBackend.from_model(self.weights, self.spec, device=str(self.device))
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False  # every image has its own size: no re-tuning per shape
        scores: dict[str, float] = {}
        stopped = False
        try:
            for vset in sets:
                found = score(vset.detector(backend), vset, should_stop=lambda: self.stop_signal is not None)
                if found is None:
                    stopped = True
                    break
                scores.update(found)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        self.train_mode()
        return None if stopped else scores

    def validation_due(self) -> bool:
        """Every ``val_every`` steps, and at the last step when ``val_every`` fits in the run (0: never)."""
        every = self.cfg.val_every
        return every > 0 and (self.step % every == 0 or (self.step == self.cfg.steps and every <= self.cfg.steps))

    # -- the loop ---------------------------------------------------------------------------------
    def _request_stop(self, signum: int, frame: object) -> None:  # noqa: ARG002
        self.stop_signal = signum

    def fit(self, progress: bool = True) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg
        check_folder_can_be_made(self.out)  # before the data loads, which can take minutes
        dataset = training_set(cfg, self.objective, progress=progress and self.rank == 0,
                               unlabelled_cache=self.out / UNLABELLED_FACES)
        val_sets = [validation_set(source) for source in cfg.val_data]
        val_metrics = [m for vset in val_sets for m in vset.metrics]
        if cfg.hard_image_mining and self.miner is None:
            self.miner = HardImageMiner(len(dataset), seed=cfg.seed)
        sampler = ResumableSampler(len(dataset), cfg.batch_size * cfg.accumulate, cfg.seed, self.rank,
                                   self.world_size, miner=self.miner)
        make_output_folder(self.out)  # once the data loads: a bad source leaves no folder
        sampler.start_at(self.step)
        loader = iter(DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                                 collate_fn=collate, pin_memory=self.device.type == "cuda",
                                 worker_init_fn=_leave_signals_to_the_trainer))
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        columns = ["step", "lr", "loss", *(f"loss_{t}" for t in self.terms), "images_per_s", "data_wait_share",
                   "val_seconds", *(f"val_{m}" for m in val_metrics), "val_ap"]
        log = CsvLog(self.out / "log.csv", columns) if self.rank == 0 else None
        board = self._tensorboard()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step",
                   disable=not progress or self.rank != 0)
        self.train_mode()
        # training crops have one fixed size: let cuDNN pick its fastest kernels once (validation turns it off)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        images, waited, tick = 0, 0.0, time.perf_counter()  # waited: seconds blocked on the data loader
        result: dict[str, float] = {}
        try:
            while self.step < cfg.steps and self.stop_signal is None:
                lr = learning_rate(cfg, self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("multiplier", 1.0)
                self.optimizer.zero_grad(set_to_none=True)
                totals = torch.zeros(len(self.terms))
                kept = self._keep_init_penalty() if self.kept else None  # the weights move only after the step
                for micro in range(cfg.accumulate):
                    wait_start = time.perf_counter()
                    x, targets, indices = next(loader)
                    waited += time.perf_counter() - wait_start
                    x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    targets = {k: t.to(self.device, non_blocking=True) for k, t in targets.items()}
                    sync = micro == cfg.accumulate - 1 or not self.distributed
                    with (self.net.no_sync() if not sync else nullcontext()), torch.autocast(
                            self.device.type, dtype=torch.float16, enabled=self.use_amp):
                        outputs = self.net(x)
                        terms = self.objective.loss(outputs, targets)
                        if self.teachers:
                            taught = self._taught(x, targets["teacher"], outputs)
                            terms.update({f"distill_{t}": cfg.distill_weight * v
                                          for t, v in self.objective.distill(outputs, taught, targets).items()})
                        if kept is not None:
                            terms["keep_init"] = kept
                        loss = cast(torch.Tensor, sum(terms.values())) / cfg.accumulate
                    self.scaler.scale(loss).backward()
                    if self.miner is not None:
                        self._update_miner(self.miner, indices, self.objective.face_prob(outputs), targets["labels"])
                    totals += torch.stack([terms[t].detach().float().cpu() for t in self.terms]) / cfg.accumulate
                    images += len(x) * self.world_size
                if not torch.isfinite(totals).all():
                    self.diverged = True
                    raise FloatingPointError(
                        f"training diverged at step {self.step + 1} (loss {totals.tolist()}); lower lr or set "
                        f"clip_grad_norm, then resume from {self.last_path} (it holds the last finite weights)")
                if cfg.clip_grad_norm:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.kept:
                    self._pull_to_init()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                result = {"loss": float(totals.sum()),
                          **{f"loss_{t}": float(v) for t, v in zip(self.terms, totals)}}
                bar.update()
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = max(time.perf_counter() - tick, 1e-9)
                    rate, data_share = images / elapsed, waited / elapsed
                    images, waited, tick = 0, 0.0, time.perf_counter()
                    bar.set_postfix(loss=f"{result['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}",
                                    data=f"{100 * data_share:.0f}%")
                    if log is not None:
                        log.write({"step": self.step, "lr": lr, **{k: f"{v:.5f}" for k, v in result.items()},
                                   "images_per_s": f"{rate:.2f}", "data_wait_share": f"{data_share:.3f}"})
                        if board:
                            for key, value in result.items():
                                board.add_scalar(f"train/{key}", value, self.step)
                            board.add_scalar("train/lr", lr, self.step)
                if self.step % cfg.checkpoint_every == 0:
                    self.save(self.last_path)
                if val_sets and self.validation_due() and self.rank == 0:
                    val_start = time.perf_counter()
                    scores = self.validate(val_sets)
                    if scores is None:  # interrupted: no AP, and no best.pt from a partial pass
                        self.validation_cut = True
                        break
                    ap, seconds = headline(scores, val_sets), time.perf_counter() - val_start
                    result.update({f"val_{m}": v for m, v in scores.items()}, val_ap=ap)
                    if log is not None:
                        log.write({"step": self.step, "lr": lr, "val_ap": f"{ap:.5f}", "val_seconds": f"{seconds:.2f}",
                                   **{f"val_{m}": f"{scores[m]:.5f}" for m in val_metrics}})
                    if board:
                        for metric, value in scores.items():
                            board.add_scalar(f"val/{metric}", value, self.step)
                        board.add_scalar("val/mean", ap, self.step)
                    if ap > self.best_ap:
                        self.best_ap = ap
                        self.save(self.out / "best.pt")
                    mean = f"mean {ap:.4f}, " if len(scores) > 1 else ""
                    tqdm.write(f"step {self.step}: validation " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
                               + f" ({mean}best {self.best_ap:.4f}; {seconds:.1f} s)")
                    images, waited, tick = 0, 0.0, time.perf_counter()  # validation is not training time
        finally:
            try:
                if not self.diverged:  # on completion, error or interrupt: nothing is lost
                    self.save(self.last_path)
            finally:  # even when that save fails (a full disk): the log closed, the caller's signal handlers back
                bar.close()
                if log is not None:
                    log.close()
                if board:
                    board.close()
                for s, handler in handlers.items():
                    signal.signal(s, handler)
        return result

    def _update_miner(self, miner: HardImageMiner, indices: torch.Tensor, face_prob: torch.Tensor,
                      labels: torch.Tensor) -> None:
        indices = indices.to(self.device)
        if self.distributed:  # every rank keeps the same flags
            gathered = [torch.empty_like(t) for t in (indices, face_prob, labels) for _ in range(self.world_size)]
            k = self.world_size
            dist.all_gather(gathered[:k], indices)
            dist.all_gather(gathered[k : 2 * k], face_prob.contiguous())
            dist.all_gather(gathered[2 * k :], labels)
            indices, face_prob, labels = (torch.cat(gathered[i * k : (i + 1) * k]) for i in range(3))
        miner.update(indices, face_prob, labels)

    def _tensorboard(self) -> SummaryWriter | None:
        if self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


class TrainingInterrupted(EdgefaceError):
    """Training stopped on SIGINT / SIGTERM before its last step; ``last.pt`` holds everything to resume from."""

    def __init__(self, step: int, steps: int, signum: int, last_path: Path):
        self.step, self.steps, self.signum, self.last_path = step, steps, signum, last_path
        name = signal.Signals(signum).name
        super().__init__(f"interrupted ({name}) at step {step} of {steps}; {last_path} is saved: run the same "
                         "command again to resume from it")


def _leave_signals_to_the_trainer(worker_id: int) -> None:  # noqa: ARG001
    """DataLoader workers ignore SIGINT / SIGTERM: Ctrl-C in a terminal reaches the whole process group, and a
    worker that died of it would take the main process down before it could checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> dict[str, float]:
    """Train per `cfg`, continuing from ``<output>/last.pt`` when it exists and `resume` is set.

    Returns the last step's losses (and ``val_ap`` when it validated). Raises :class:`TrainingInterrupted` when a
    SIGINT or SIGTERM stopped it early (after saving ``last.pt``). Under torchrun, a script calling this should end
    its process with ``os._exit`` once it has written what it needs, as ``edgeface train`` does (see
    ``edgeface.cli.train.leave_worker``): torch's communication threads can abort Python's teardown."""
    trainer = Trainer(cfg)
    if resume and trainer.resume():
        print(f"resuming {cfg.output} at step {trainer.step}")
    try:
        result = trainer.fit(progress=progress)
    finally:
        if trainer.distributed and dist.is_initialized():
            dist.destroy_process_group()
    if trainer.stop_signal is not None and (trainer.step < cfg.steps or trainer.validation_cut):
        raise TrainingInterrupted(trainer.step, cfg.steps, trainer.stop_signal, trainer.last_path)
    return result
