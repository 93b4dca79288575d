"""What a user chooses for stage 1 (``cfrh-cache features``'s and ``import``'s options), checked
when made: one frozen record that the pipeline reads and the provenance records."""

from __future__ import annotations

from dataclasses import dataclass

from cfrh.devices import check_device_name
from cfrh.errors import ConfigError
from cfrh.text import TOKENIZER
from cfrh_cache.splits import PROTOCOLS
from cfrh_cache.store import CHUNK_ROWS


@dataclass(frozen=True)
class FeatureOptions:
    """What a user chooses for stage 1 (``cfrh-cache features``'s options), checked on creation."""

    model: str = "ViT-B-32"
    pretrained: str | None = "openai"
    batch_size: int = 256
    workers: int = 2
    device: str = "auto"
    protocol: str = "djsrh"
    seed: int = 0
    vocab_size: int = 2000
    min_df: int = 2
    resplit: bool = False
    rebuild: bool = False
    chunk_rows: int = CHUNK_ROWS
    progress: bool = True
    image_layout: str | None = None
    text_encoder: bool = False  # also CLIP text embeddings of raw texts: text/<model>__<pretrained>
    val_holdout: bool | None = None  # validation rows out of training (None: where train = database)
    label_field: str | None = None  # shards: the JSON field holding a sample's labels
    on_error: str = "stop"  # shards: a bad sample or shard stops the read, or is skipped and counted

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("workers", 0), ("vocab_size", 1), ("min_df", 1), ("chunk_rows", 1),
                          ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected an integer ≥ {low}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        check_device_name(self.device)

    def vocabulary_params(self) -> dict:
        return {"max_size": self.vocab_size, "min_df": self.min_df, "tokenizer": TOKENIZER}
