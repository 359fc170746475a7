"""A stand-in for TRELLIS's `BasicTrainer` (tests cannot fetch TRELLIS), written from reading
microsoft/TRELLIS at commit 6b0d64751ad54d9c32d7b05fec482eb29178f56f (2025-08-05):
trellis/trainers/basic.py (`init_models_and_more`, `run_step`), trellis/trainers/base.py (`run`'s
loop, `self.step`), trellis/trainers/utils.py (the flat fp32 master parameter and its copies).

Same attribute names and the same step logic per `fp16_mode`; our own code. Differences, all for the
CPU: autocast and the GradScaler use the models' device type (TRELLIS hard-codes 'cuda'); DDP
(under an initialised process group) without `no_sync` for the micro-batches; no EMA, elastic memory
or checkpoints; data comes from `load_data()` below (seeded by step and rank), not a dataset.

Faults: iterations in `bad_steps` (1-based) get an inf in the input (of the last rank only: DDP's
all-reduce carries it to every rank), so their gradients are non-finite: `inflat_all` lowers
log_scale and skips, `amp`'s GradScaler skips, mode None prints a warning and skips. `truth`
records, without asking the monitor, which iterations skipped and each iteration's loss (the mean
of its micro-batch losses, as TRELLIS logs it).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from tests.monitor.matrix import Decoder, Torso


@dataclass
class Truth:
    skipped: list[int] = field(default_factory=list)
    loss: dict[int, float] = field(default_factory=dict)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


class StandInTrainer:
    """BasicTrainer-shaped: `models`, `training_models`, `model_params`, `master_params`, `optimizer`,
    `fp16_mode`, `log_scale`, `fp16_scale_growth`, `scaler`, `grad_clip`, `batch_split`, `step`."""

    def __init__(self, fp16_mode: str | None, max_steps: int = 12, batch_split: int = 1,
                 grad_clip: float | None = None, bad_steps: tuple[int, ...] = (),
                 fp16_scale_growth: float = 1e-3) -> None:
        torch.manual_seed(0)
        blocks = torch.float16 if fp16_mode == "inflat_all" else torch.float32  # convert_to_fp16()
        self.models = {"encoder": Torso(blocks), "decoder": Decoder(blocks)}
        self.fp16_mode, self.fp16_scale_growth = fp16_mode, fp16_scale_growth
        self.max_steps, self.batch_split, self.grad_clip = max_steps, batch_split, grad_clip
        self.bad_steps = bad_steps
        dist = torch.distributed
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world_size > 1 else 0
        self.is_master = self.rank == 0
        self.step = 0
        self.truth = Truth()
        self.init_models_and_more()

    @property
    def device(self) -> torch.device:
        return next(iter(self.models.values())).out_layer.weight.device

    def init_models_and_more(self) -> None:
        self.training_models = {n: nn.parallel.DistributedDataParallel(m) for n, m in self.models.items()} \
            if self.world_size > 1 else self.models
        self.model_params = sum([[p for p in m.parameters() if p.requires_grad] for m in self.models.values()], [])
        if self.fp16_mode == "amp":
            self.master_params = self.model_params
            self.scaler = torch.GradScaler(self.device.type, init_scale=2.0**12)
        elif self.fp16_mode == "inflat_all":
            self.master_params = [nn.Parameter(_flat(self.model_params))]  # make_master_params()
            self.log_scale = 12.0  # TRELLIS starts at 20; 12 keeps fp16 gradients finite on this tiny model
        elif self.fp16_mode is None:
            self.master_params = self.model_params
        else:
            raise NotImplementedError(f"FP16 mode {self.fp16_mode} is not implemented.")
        self.optimizer = torch.optim.AdamW(self.master_params, lr=1e-3)

    def training_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        z = self.training_models["encoder"](x)
        loss = nn.functional.mse_loss(self.training_models["decoder"](z).float(), y)
        return {"loss": loss, "mse": loss}, {}

    def load_data(self) -> list[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.step + 1000 * self.rank)
        x, y = torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)
        if self.step + 1 in self.bad_steps and self.rank == self.world_size - 1:  # one rank's batch only
            x[3, 2] = math.inf
        n = 16 // self.batch_split
        return [{"x": x[i * n:(i + 1) * n], "y": y[i * n:(i + 1) * n]} for i in range(self.batch_split)]

    def run(self) -> None:
        while self.step < self.max_steps:
            self.run_step(self.load_data())
            self.step += 1

    def _finite_grads(self) -> bool:
        return not any(not p.grad.isfinite().all() for p in self.model_params)

    def _to_master_grads(self) -> None:  # model_grads_to_master_grads() + unscale
        self.master_params[0].grad = _flat([p.grad for p in self.model_params])
        self.master_params[0].grad.mul_(1.0 / (2 ** self.log_scale))

    def run_step(self, data_list: list[dict[str, torch.Tensor]]) -> dict:
        """Forward/backward per micro-batch, then the mode's step, as BasicTrainer.run_step."""
        amp_context = partial(torch.autocast, device_type=self.device.type, dtype=torch.float16) \
            if self.fp16_mode == "amp" else nullcontext
        for p in self.model_params:  # zero_grad(self.model_params)
            if p.grad is not None:
                p.grad.zero_()
        losses = []
        for mb_data in data_list:
            with amp_context():
                loss, _status = self.training_losses(**mb_data)
                loss_mb = loss["loss"] / len(data_list)
            if self.fp16_mode == "amp":
                self.scaler.scale(loss_mb).backward()
            elif self.fp16_mode == "inflat_all":
                (loss_mb * (2 ** self.log_scale)).backward()
            else:
                loss_mb.backward()
            losses.append(float(loss["loss"].detach()))
        self.truth.loss[self.step + 1] = sum(losses) / len(losses)
        if self.grad_clip is not None:
            if self.fp16_mode == "amp":
                self.scaler.unscale_(self.optimizer)
            elif self.fp16_mode == "inflat_all":
                self._to_master_grads()
            torch.nn.utils.clip_grad_norm_(self.master_params, self.grad_clip)
        skipped = self._step()
        if skipped:
            self.truth.skipped.append(self.step + 1)
        return {"loss": {"loss": sum(losses) / len(losses)}}

    def _step(self) -> bool:
        """The mode's optimizer step; True when it was skipped (the truth, from the loop itself)."""
        if self.fp16_mode == "amp":
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return self.scaler.get_scale() < before
        if self.fp16_mode == "inflat_all":
            if not self._finite_grads():
                self.log_scale -= 1
                return True
            if self.grad_clip is None:
                self._to_master_grads()
            self.optimizer.step()
            with torch.no_grad():  # master_params_to_model_params()
                offset = 0
                for p in self.model_params:
                    p.copy_(self.master_params[0][offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            self.log_scale += self.fp16_scale_growth
            return False
        if not self._finite_grads():
            print("Warning: NaN detected in gradients. Skipping update.")
            return True
        self.optimizer.step()
        return False

    def final(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach().clone() for n, m in self.models.items() for k, v in m.named_parameters()}
