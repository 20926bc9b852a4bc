"""The model settings a run config holds (BiLSTM sizes, Meta-KD's domain branch), as plain pydantic classes: no
torch here, so loading a config stays light. Re-exported from `models.bilstm` and `models.domain_branch`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BiLSTMSpec(BaseModel):
    """Sizes of the BiLSTM student."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(300, gt=0, description="Size of the word embeddings.")
    hidden_size: int = Field(300, gt=0, description="LSTM hidden size per direction (the encoding is twice this).")
    num_layers: int = Field(1, ge=1, le=2, description="Number of stacked BiLSTM layers (1 or 2).")
    mlp_hidden: int = Field(256, gt=0, description="Hidden width of each task's MLP head.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on embeddings, between LSTM layers and in "
                           "the heads.")
    init_embeddings: bool = Field(True, description="Initialise the word embeddings from the teacher's (through a "
                                  "PCA projection when the sizes differ) when a teacher is given.")


class DomainBranchSpec(BaseModel):
    """The domain branch of a Meta-KD model (`model.domain_branch`); its sizes come from the encoder."""

    model_config = ConfigDict(extra="forbid")

    domains: list[str] = Field(
        min_length=2, description="The task's domain names, sorted, as `Task.domains`: domain id k (a batch's "
        "`domain_ids`) is domains[k], so another list (more, fewer or other names) is refused before training. "
        "Sizes the domain embedding and the domain classifier (K outputs), and is "
        "saved with the model so that later stages can check their data's domains against it.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on v = tanh(tau) before the domain "
                           "classifier (the authors use the encoder's hidden dropout, 0.1).")

    @field_validator("domains")
    @classmethod
    def _sorted_unique(cls, domains: list[str]) -> list[str]:
        if sorted(set(domains)) != domains:
            raise ValueError(f"domains must be distinct and sorted (they index Task.domains, a sorted tuple); got "
                             f"{domains}, expected {sorted(set(domains))}")
        return domains
