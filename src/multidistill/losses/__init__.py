"""Loss terms: small `nn.Module`s registered by name. Each returns a per-example loss vector."""

from multidistill.losses.attention import AttentionKL, AttentionMSE
from multidistill.losses.distill import LogitMSE, ScoreMSE, SoftBinaryCrossEntropy, SoftCrossEntropy, SoftKL
from multidistill.losses.domain import DomainAdversarial, TransferableMSE
from multidistill.losses.feature_base import FeatureLoss
from multidistill.losses.features import CosineHidden, HiddenMSE
from multidistill.losses.hard import HardLoss
from multidistill.losses.registry import LOSSES, build_loss, register_loss
from multidistill.losses.relation import RelationKL

__all__ = ["LOSSES", "AttentionKL", "AttentionMSE", "CosineHidden", "DomainAdversarial", "FeatureLoss", "HardLoss",
           "HiddenMSE", "LogitMSE", "RelationKL", "ScoreMSE", "SoftBinaryCrossEntropy",
           "SoftCrossEntropy", "SoftKL", "TransferableMSE",
           "build_loss", "register_loss"]
