"""Published figures that metarun's recorded results stand beside, each checked against the
paper's own table. Keyed by (algo, data set, ways, shots); values in percent accuracy."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    accuracy: float             # percent
    ci95: float | None          # the paper's 95% interval half-width, where it gives one
    citation: str

    def describe(self) -> str:
        ci = f" ± {self.ci95:.1f}%" if self.ci95 is not None else ""
        return f"{self.accuracy:.1f}%{ci} ({self.citation})"

    def reached_by(self, accuracy_percent: float) -> bool:
        """Whether ``accuracy_percent`` is within the paper's 95% interval, or above it."""
        return accuracy_percent >= self.accuracy - (self.ci95 or 0.0)


SNELL = "Snell et al. 2017, Table 1"
FINN = "Finn et al. 2017, Table 1"
VINYALS = "Vinyals et al. 2016, Table 1 (cosine, no fine-tuning)"
SUNG = "Sung et al. 2018, Table 1"
PAPER_RESULTS: dict[tuple[str, str, int, int], PaperResult] = {
    ("protonet", "omniglot", 5, 1): PaperResult(98.8, None, SNELL),
    ("protonet", "omniglot", 5, 5): PaperResult(99.7, None, SNELL),
    ("protonet", "omniglot", 20, 1): PaperResult(96.0, None, SNELL),
    ("protonet", "omniglot", 20, 5): PaperResult(98.9, None, SNELL),
    ("maml", "omniglot", 5, 1): PaperResult(98.7, 0.4, FINN),
    ("maml", "omniglot", 5, 5): PaperResult(99.9, 0.1, FINN),
    ("maml", "omniglot", 20, 1): PaperResult(95.8, 0.3, FINN),
    ("maml", "omniglot", 20, 5): PaperResult(98.9, 0.2, FINN),
    ("matchingnet", "omniglot", 5, 1): PaperResult(98.1, None, VINYALS),
    ("matchingnet", "omniglot", 5, 5): PaperResult(98.9, None, VINYALS),
    ("matchingnet", "omniglot", 20, 1): PaperResult(93.8, None, VINYALS),
    ("matchingnet", "omniglot", 20, 5): PaperResult(98.5, None, VINYALS),
    ("relationnet", "omniglot", 5, 1): PaperResult(99.6, 0.2, SUNG),
    ("relationnet", "omniglot", 5, 5): PaperResult(99.8, 0.1, SUNG),
    ("relationnet", "omniglot", 20, 1): PaperResult(97.6, 0.2, SUNG),
    ("relationnet", "omniglot", 20, 5): PaperResult(99.1, 0.1, SUNG),
}
