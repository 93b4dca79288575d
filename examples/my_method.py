"""A hashing method of your own, in one file: ``cfrh-train --method examples/my_method.py:PairedPCA``.

PairedPCA is deliberately simple (a worked example, not a contender): each modality gets a
linear head trained so that the two codes of a pair agree and each bit is balanced, on top of
the training rows' principal directions. It shows everything a method declares beside itself:
its name, its config keys (in the form of ``cfrh_train/configs/keys.json``), their defaults,
the search space ``cfrh-tune`` samples, and the Method interface (``optimizer``, ``loss``,
``encode``).
"""

import torch
from torch import nn

from cfrh_train.methods.base import Method


class PairedPCA(Method):
    name = "pairedpca"
    keys = {"pca_dims": {"type": "int", "min": 1, "help": "principal directions kept per modality"},
            "balance": {"type": "float", "min": 0, "help": "weight of the bit-balance term"}}
    defaults = {"pca_dims": 32, "balance": 0.1, "lr": 0.01, "epochs": 10, "eval_every": 2, "batch_size": 64}
    search_space = {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                    "balance": {"type": "float", "low": 0.0, "high": 1.0}}

    def __init__(self, config: dict, dim_img: int, dim_txt: int, text_kind: str = "bow"):
        super().__init__()
        self.config = config
        k = config["pca_dims"]
        for side, dim in (("img", dim_img), ("txt", dim_txt)):
            self.register_buffer(f"mean_{side}", torch.zeros(dim))
            self.register_buffer(f"basis_{side}", torch.zeros(dim, min(k, dim)))
        self.head_img = nn.Linear(min(k, dim_img), config["bits"])
        self.head_txt = nn.Linear(min(k, dim_txt), config["bits"])

    def fit(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        for side, x in (("img", img), ("txt", txt)):
            mean = x.mean(0)
            _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
            getattr(self, f"mean_{side}").copy_(mean)
            getattr(self, f"basis_{side}").copy_(v[: getattr(self, f"basis_{side}").shape[1]].T)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config["lr"])

    def encode(self, img=None, txt=None):
        code = lambda x, side: None if x is None else torch.tanh(getattr(self, f"head_{side}")(
            (x - getattr(self, f"mean_{side}")) @ getattr(self, f"basis_{side}")))
        return code(img, "img"), code(txt, "txt")

    def loss(self, img: torch.Tensor, txt: torch.Tensor, index: torch.Tensor | None = None) -> dict:
        ci, ct = self.encode(img, txt)
        agree = ((ci - ct) ** 2).mean()
        balance = ci.mean(0).pow(2).mean() + ct.mean(0).pow(2).mean()
        return {"loss": agree + self.config["balance"] * balance, "agree": agree, "balance": balance}
