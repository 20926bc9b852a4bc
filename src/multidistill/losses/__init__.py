"""Loss terms: small `nn.Module`s registered by name. Each returns a per-example loss vector."""

from multidistill.losses.distill import LogitMSE, ScoreMSE, SoftCrossEntropy, SoftKL
from multidistill.losses.hard import HardLoss
from multidistill.losses.registry import LOSSES, build_loss, register_loss

__all__ = ["LOSSES", "HardLoss", "LogitMSE", "ScoreMSE", "SoftCrossEntropy", "SoftKL", "build_loss", "register_loss"]
