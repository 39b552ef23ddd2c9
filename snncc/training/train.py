"""Training driver for the image models (MLP, CNN): any method the registry lists for them
(BSD, BPTT, the BP-on-ANN baseline, or one registered later).

``train(cfg, out_dir)`` is the whole API the CLI needs. It is deterministic for a
given ``cfg.seed`` (weight init, data subset and per-epoch order all derive from
it), and after every epoch it atomically rewrites ``out_dir/model.pt`` and
``out_dir/metrics.json``, so a crash or a diverged run leaves the last good epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from snncc.data.augment import MAX_MAGNITUDE as RA_MAX_MAGNITUDE
from snncc.data.augment import MAX_OPS as RA_MAX_OPS
from snncc.data.augment import RandAugment
from snncc.data.datasets import DatasetError, batches, dataset_info, load_split, padded
from snncc.models.cnn import ANNCNN, BPTTCNN, BSDCNN
from snncc.models.layers import channel_stats
from snncc.models.mlp import ANNMLP, BPTTMLP, BSDMLP
from snncc.training.evaluation import CountAccuracy
from snncc.training.evaluation import evaluate as evaluate_metric
from snncc.training.methods.bsd import INTERLAYER_LOSSES, RECO_PAIRS, TOP_LOSSES, cosine_predict, firing_rates, repeat_time
from snncc.training.registry import Method, Variant, lookup
from snncc.training.checkpoint import FORMATS, CheckpointError, fit_state, read_checkpoint
from snncc.training.config import (ConfigError, check_choice, check_float, check_int, check_keys, check_run, fill,
                                   is_int, is_number, plain)
from snncc.training.loop import (SCHEDULES, TrainingDiverged, deterministic, epoch_seed, fit,
                                 hamming_similarity, make_optimizer, make_scheduler, method_step)
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults

CHECKPOINT_FORMAT = FORMATS["image"]
MODELS = ("mlp", "cnn")  # the methods that train them: snncc.training.registry
# App. E.2.1 layer sizes; digits is our small CPU demo (8x8 inputs).
DEFAULT_SIZES = {
    "digits": (64, 256, 256, 10),
    "mnist": (784, 1024, 1024, 512, 256, 10),
    "fashion-mnist": (784, 1024, 1024, 512, 256, 10),
    "cifar10": (3072, 4096, 2048, 1024, 512, 10),
    "cifar100": (3072, 4096, 2048, 1024, 512, 100),
}
AUGMENTS = ("none", "randaugment")
MAX_POPULATION = 1024  # output neurons per class (BSD label codes)


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints as a plain dict.

    Fields left as None take the ``recipe``'s value for (method, model, dataset) in ``resolved()``
    (:mod:`snncc.training.recipes`: epochs, batch_size, lr, schedule, warmup_steps, v_th,
    v_th_backward, augment, ra_n, ra_m); ``sizes`` takes DEFAULT_SIZES (App. E.2.1) and
    ``normalize`` is on for the CNN (App. E.2.2, "all images are normalized").
    ``v_th``/``v_th_backward`` are the Type 1 / Type 2 thresholds (BPTT uses ``v_th``);
    ``lam``, ``interlayer_loss``, ``temperature`` (InfoNCE ablation) and ``top_loss`` only matter
    for BSD; ``tau`` is the membrane time constant.
    ``sizes`` is for the MLP only; ``width`` scales the CNN's channels (128, 128, 256,
    256, 512); ``warmup_steps`` of linear warm-up precede the schedule (capped
    at a fifth of the run's steps, so short runs still reach the full rate).
    ``method="ann"`` trains the same architecture with ReLU units by backprop.
    ``normalize`` (CNN only) normalises the input per channel with the training split's
    mean and std, inside the model so it is part of the exported graph's Input.
    ``init_gain`` multiplies the default-initialised weights of every weight layer (W and Theta): with
    eq. 2's 1/tau input scaling, the deep layers of the paper's MNIST MLP are nearly silent at init
    (docs/results.md, "Firing at initialisation").
    ``augment="randaugment"`` applies RandAugment (snncc.data.augment) with ``ra_n``
    ops of magnitude ``ra_m`` to every training batch (never to test data).
    ``population`` (BSD MLP / CNN; snncc's option, not in the paper) gives every class P output neurons,
    trained on a label code of P ones per class and read out by the cosine rule on those codes (the argmax
    of each class's summed block of counts): the default sizes end in classes x P, given sizes must.
    """

    method: str = "bsd"
    model: str = "mlp"
    dataset: str = "digits"
    data_dir: str | None = None
    recipe: str = DEFAULT_RECIPE  # "cpu" | "paper": the defaults of the None fields below
    epochs: int | None = None
    timesteps: int = 4
    train_samples: int | None = None
    test_samples: int | None = None
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    schedule: str | None = None  # "cosine" | "constant" (after the warm-up)
    sizes: tuple | None = None  # [n_1 (input), ..., n_L (classes)]; None: DEFAULT_SIZES
    v_th: float | None = None  # Type 1 (feedforward) threshold
    v_th_backward: float | None = None  # Type 2 (backward) threshold (BSD only)
    tau: float = 2.0
    neuron: str = "lif"
    surrogate: str = "atan"
    lam: float = 0.6
    interlayer_loss: str = "reco"
    temperature: float = 0.1  # InfoNCE ablation only
    top_loss: str = "ce"  # BSD top layer: "ce" (eq. 9) or "firing" (snncc: per-class, vs the firing level)
    reco_pairs: str | None = None  # BSD ReCo pairs: "all" (eq. 7), "distinct-labels", "same-label-positive"
    reco_same_weight: float | None = None  # BSD ReCo, pairs "all": weight of the same-label negatives (None: 1, eq. 7)
    grad_clip: float | None = 0.3  # None: no clipping
    weight_decay: float = 0.01
    width: float = 1.0  # CNN channel multiplier (e.g. 0.125 for CPU runs)
    warmup_steps: int | None = None
    augment: str | None = None  # "randaugment" | "none"
    ra_n: int | None = None  # RandAugment ops per image
    ra_m: int | None = None  # RandAugment magnitude bin 0..30
    normalize: bool | None = None  # per-channel input normalisation (CNN only); None: on for the CNN
    init_gain: float = 1.0  # every weight layer's PyTorch default initialisation x this gain (wakes deep layers)
    population: int = 1  # BSD: output neurons per class (label code of P ones per class; 1: the paper's one-hot)

    def to_dict(self) -> dict:
        """Plain python values only, so checkpoints load with ``weights_only=True``."""
        d = {k: plain(v) for k, v in asdict(self).items()}
        d["sizes"] = None if self.sizes is None else [int(n) for n in self.sizes]
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        return d

    @classmethod
    def from_dict(cls, d) -> "TrainConfig":
        check_keys(cls, d)
        if "normalize" not in d:
            d = {**d, "normalize": False}  # written before input normalisation existed
        cfg = cls(**d)
        if cfg.sizes is not None:
            cfg.sizes = tuple(cfg.sizes)
        return cfg

    def layer_sizes(self) -> list:
        """The full layer sizes [n_1, ..., n_L] (validates the config first)."""
        self.validate()
        if self.sizes is not None:
            return list(self.sizes)
        sizes = DEFAULT_SIZES[padded(self.dataset)[0]]   # a padded set: the base's hidden layers, its input size
        return [math.prod(dataset_info(self.dataset).input_shape), *sizes[1:-1], sizes[-1] * self.population]

    def defaults(self) -> dict:
        """The recipe's values for this run's (method, model, dataset)."""
        return recipe_defaults(self.recipe, self.method, self.model, padded(self.dataset)[0])

    def resolved(self) -> "TrainConfig":
        """A validated copy with every default filled in, as recorded in outputs."""
        self.validate()
        d = self.defaults()
        filled = fill(self, {k: v for k, v in d.items() if k not in ("ra_n", "ra_m")})
        if self.interlayer_loss != "reco":  # the recipe's ReCo pairs mean nothing for the ablation losses
            filled.pop("reco_pairs", None)
        augment = filled.get("augment", self.augment)
        ra = augment == "randaugment"
        return replace(self, **filled, sizes=None if self.model != "mlp" else tuple(self.layer_sizes()),
                       ra_n=(self.ra_n if self.ra_n is not None else d["ra_n"]) if ra else None,
                       ra_m=(self.ra_m if self.ra_m is not None else d["ra_m"]) if ra else None,
                       normalize=(self.normalize if self.normalize is not None else self.model == "cnn"))

    def _augment(self) -> str:
        """``augment``, or the recipe's choice for the dataset when it is None."""
        return self.augment if self.augment is not None else self.defaults()["augment"]

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        check_choice("recipe", self.recipe, RECIPES)
        check_choice("model", self.model, MODELS)
        lookup(self.method, self.model)
        check_choice("neuron", self.neuron, ("lif", "if"))
        check_choice("surrogate", self.surrogate, ("atan", "sigmoid"))
        check_choice("interlayer_loss", self.interlayer_loss, INTERLAYER_LOSSES)
        check_choice("top_loss", self.top_loss, TOP_LOSSES)
        if self.schedule is not None:
            check_choice("schedule", self.schedule, SCHEDULES)
        if self.top_loss != "ce" and self.method != Method.BSD:
            raise ConfigError(f"top_loss {self.top_loss!r} applies to --method bsd (got {self.method!r})")
        if self.reco_pairs is not None:
            check_choice("reco_pairs", self.reco_pairs, RECO_PAIRS)
            if self.method != Method.BSD:
                raise ConfigError(f"reco_pairs applies to --method bsd (got {self.method!r})")
            if self.reco_pairs != "all" and self.interlayer_loss != "reco":
                raise ConfigError(f"reco_pairs {self.reco_pairs!r} applies to the reco inter-layer loss "
                                  f"(got {self.interlayer_loss!r})")
        if self.reco_same_weight is not None:
            check_float("reco_same_weight", self.reco_same_weight, positive=False)
            pairs = self.reco_pairs or self.defaults().get("reco_pairs")
            if self.method != Method.BSD or self.interlayer_loss != "reco" or pairs != "all":
                raise ConfigError(f"reco_same_weight applies to --method bsd with the reco loss and --reco-pairs all "
                                  f"(got method {self.method!r}, loss {self.interlayer_loss!r}, pairs {pairs!r})")
        check_int("population", self.population, 1, maximum=MAX_POPULATION)
        if self.population != 1 and (self.method != Method.BSD or self.model not in ("mlp", "cnn")):
            raise ConfigError(f"population applies to --method bsd with the mlp or cnn model "
                              f"(got method {self.method!r}, model {self.model!r})")
        check_run(self)
        if self.lr is not None:
            check_float("lr", self.lr, positive=True)
        for name in ("v_th", "v_th_backward", "temperature", "width", "init_gain"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), positive=True)
        if self.warmup_steps is not None:
            check_int("warmup_steps", self.warmup_steps, 0)
        for name in ("lam", "weight_decay"):
            check_float(name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, positive=True)
        if self.augment is not None:
            check_choice("augment", self.augment, AUGMENTS)
        if self.ra_n is not None:
            check_int("ra_n", self.ra_n, 1, maximum=RA_MAX_OPS)
        if self.ra_m is not None:
            check_int("ra_m", self.ra_m, 0, maximum=RA_MAX_MAGNITUDE)
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be true or false, got {self.normalize!r}")
        if self.normalize and self.model != "cnn":
            raise ConfigError(f"input normalisation applies to the cnn model only (got model {self.model!r})")
        if self.neuron == "lif" and not (is_number(self.tau) and self.tau > 1):
            raise ConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")
        self._check_sizes()
        if (self.ra_n is not None or self.ra_m is not None) and self._augment() != "randaugment":
            raise ConfigError(f"ra_n / ra_m only apply with augment 'randaugment' "
                              f"(augment for {self.dataset} is {self._augment()!r})")

    def _check_sizes(self) -> None:
        try:
            info = dataset_info(self.dataset)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        if self.sizes is None:
            return
        if self.model != "mlp":
            raise ConfigError(f"sizes only apply to the mlp model (the {self.model} is sized by width), "
                              f"got {self.sizes!r}")
        sizes = list(self.sizes) if isinstance(self.sizes, (list, tuple)) else None
        if not sizes or len(sizes) < 2 or not all(is_int(n) and n >= 1 for n in sizes):
            raise ConfigError(f"sizes must list >= 2 positive layer sizes, got {self.sizes!r}")
        n_in, n_cls = math.prod(info.input_shape), info.num_classes
        n_out = n_cls * self.population if is_int(self.population) else n_cls
        if sizes[0] != n_in or sizes[-1] != n_out:
            per = f" x {self.population} (population)" if n_out != n_cls else ""
            raise ConfigError(f"mlp sizes {sizes} do not fit {self.dataset}: the first must be {n_in} "
                              f"(flattened {'x'.join(map(str, info.input_shape))} input), the last {n_out} "
                              f"({n_cls} classes{per})")


# ---------------------------------------------------------------- models
# the architecture each method variant trains (snncc.training.methods.base.Variant)
ARCHITECTURES = {("mlp", Variant.PAIRED): BSDMLP, ("mlp", Variant.SPIKING): BPTTMLP, ("mlp", Variant.RELU): ANNMLP,
                 ("cnn", Variant.PAIRED): BSDCNN, ("cnn", Variant.SPIKING): BPTTCNN, ("cnn", Variant.RELU): ANNCNN}


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The untrained model described by ``cfg`` (validated and defaults resolved first): the architecture of
    the registered method's variant; ``model.training_method`` is that method (what :func:`train_step` runs)."""
    cfg = cfg.resolved()
    method = lookup(cfg.method, cfg.model)
    arch = ARCHITECTURES[(cfg.model, method.variant)]
    if cfg.model == "cnn":
        info = dataset_info(cfg.dataset)
        args = dict(input_shape=info.input_shape, num_classes=info.num_classes, width=cfg.width,
                    normalize=cfg.normalize)
    else:
        args = dict(sizes=cfg.layer_sizes())
    args["timesteps"] = cfg.timesteps
    if method.variant is not Variant.RELU:
        args.update(v_th=cfg.v_th, tau=cfg.tau, neuron_model=cfg.neuron, surrogate=cfg.surrogate)
    if method.variant is Variant.PAIRED:
        args.update(v_th_backward=cfg.v_th_backward, lam=cfg.lam, interlayer=cfg.interlayer_loss,
                    temperature=cfg.temperature, top=cfg.top_loss,
                    reco_pairs=cfg.reco_pairs if cfg.interlayer_loss == "reco" and cfg.reco_pairs else "all")
        if cfg.reco_same_weight is not None:
            args["reco_same_weight"] = cfg.reco_same_weight
        args["population"] = cfg.population
    model = arch(**args)
    if cfg.init_gain != 1.0:
        with torch.no_grad():
            for _, layer in model.named_weight_layers():
                for p in layer.parameters():
                    if p.dim() > 1:  # weights (not batch-norm scales and shifts)
                        p.mul_(cfg.init_gain)
    model.training_method = method
    return model


# ---------------------------------------------------------------- one step
def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, grad_clip=0.3):
    """One step of ``model.training_method`` on a static batch presented over T (one forward of all paths,
    one backward of the summed losses, one update). Returns (summed loss, info); raises TrainingDiverged
    before touching the weights."""
    return method_step(model.training_method, model, optimizer, repeat_time(x, model.timesteps), y, grad_clip)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Test accuracy of the forward path with the cosine-to-label-code rule."""
    return evaluate_metric(model, batches(x, y, batch_size),
                           CountAccuracy(model.timesteps, getattr(model, "population", 1)))["test_accuracy"]


# ---------------------------------------------------------------- epochs
_AUGMENT_SALT = 1  # separates the augmentation stream from the data-order stream of an epoch


def make_augment(cfg: TrainConfig):
    """The training-batch transform of a resolved config (None: no augmentation)."""
    return RandAugment(cfg.ra_n, cfg.ra_m) if cfg.augment == "randaugment" else None


def _train_epoch(model, optimizer, scheduler, data, cfg: TrainConfig, epoch: int, bar) -> dict:
    x, y = data
    loss_sum, correct, rate_sums, ham_sums = 0.0, 0, {}, {}
    augment = make_augment(cfg)
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, _AUGMENT_SALT)) if augment else None
    for step, (xb, yb) in enumerate(batches(x, y, cfg.batch_size, shuffle=True, seed=epoch_seed(cfg.seed, epoch))):
        if augment is not None:  # training batches only; evaluate() sees the test set as loaded
            xb = augment(xb, gen)
        try:
            loss, info = train_step(model, optimizer, xb, yb, cfg.grad_clip)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"epoch {epoch}, step {step + 1}: {exc}", exc.layer) from None
        scheduler.step()
        loss_sum += loss
        correct += int((cosine_predict(info["output"].detach().sum(0), getattr(model, "population", 1)) == yb).sum())
        for name, rate in firing_rates(info["spikes"]).items():
            rate_sums[name] = rate_sums.get(name, 0.0) + rate * len(yb)
        for name, sim in hamming_similarity(info["spikes"]).items():
            ham_sums[name] = ham_sums.get(name, 0.0) + sim * len(yb)
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss / len(yb):.3f}", refresh=False)
    return {"train_loss": loss_sum / len(y), "train_accuracy": correct / len(y),
            "firing_rates": {k: v / len(y) for k, v in rate_sums.items()},
            "hamming": {k: v / len(y) for k, v in ham_sums.items()}}


def _load_data(cfg: TrainConfig):
    train = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
    test = load_split(cfg.dataset, "test", cfg.data_dir, cfg.test_samples, cfg.seed)
    return train, test


def train(cfg: TrainConfig, out_dir, progress: bool = True, threads: int | None = None,
          resume: bool = False) -> dict:
    """Train ``cfg``'s model, writing out_dir/model.pt and out_dir/metrics.json after each epoch.

    Defaults (recipe values, sizes) are resolved first, so the recorded config is explicit.
    ``threads`` sets torch's CPU threads for the run (restored after): 1 is much
    faster for the small digits MLPs on a busy machine. ``resume=True`` continues from
    out_dir/model.pt if it exists (same config except ``epochs``), bit-identical to a run
    that was never interrupted.
    Returns the metrics dict. Raises ConfigError, DatasetError, CheckpointError or TrainingDiverged
    (after which the files of the last completed epoch, if any, are left intact).
    """
    cfg = cfg.resolved()
    with deterministic(cfg.seed, threads):
        model = build_model(cfg)
        train_data, test_data = _load_data(cfg)
        norm = getattr(model, "input_normalizer", None)
        if norm is not None:  # statistics of the (subsampled) training split, never of test data
            norm.set_stats(*channel_stats(train_data[0]))
        steps = cfg.epochs * math.ceil(len(train_data[1]) / cfg.batch_size)
        with tqdm(total=steps, desc=f"{cfg.method} {cfg.dataset}", disable=not progress, unit="batch") as bar:
            return _fit(model, cfg, train_data, test_data, Path(out_dir), bar, resume)


def _fit(model, cfg: TrainConfig, train_data, test_data, out: Path, bar, resume: bool) -> dict:
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler, warm = make_scheduler(optimizer, bar.total, cfg.warmup_steps, cfg.schedule)
    metrics = {"test_accuracy": None, "history": [], "config": cfg.to_dict(), "recipe": cfg.recipe,
               "effective_warmup_steps": warm}

    def run_epoch(epoch):
        start = time.perf_counter()
        stats = _train_epoch(model, optimizer, scheduler, train_data, cfg, epoch, bar)
        acc = evaluate(model, *test_data)
        entry = {"epoch": epoch, "train_loss": stats["train_loss"],
                 "train_accuracy": stats["train_accuracy"], "test_accuracy": acc,
                 "seconds": time.perf_counter() - start, "firing_rates": stats["firing_rates"]}
        if stats["hamming"]:
            entry["hamming"] = stats["hamming"]
        if hasattr(model, "weight_alignment"):
            entry["alignment"] = model.weight_alignment()
        bar.set_postfix(epoch=epoch, test_acc=f"{acc:.3f}")
        return entry

    return fit(out, CHECKPOINT_FORMAT, cfg.to_dict(), cfg.seed, cfg.epochs, model, optimizer, scheduler,
                 metrics, run_epoch, lambda e: {"test_accuracy": e["test_accuracy"]},
                 lambda: {"state_dict": model.state_dict()}, resume=resume,
                 upgrade=lambda d: TrainConfig.from_dict(d).to_dict())


# ---------------------------------------------------------------- loading
def load_checkpoint(path):
    """Rebuild the model saved by :func:`train` -> (model in eval mode, TrainConfig)."""
    path = Path(path)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT)
    try:
        cfg = TrainConfig.from_dict(ckpt.get("config"))
        model = build_model(cfg)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    fit_state(model, ckpt.get("state_dict"), path)
    return model.eval(), cfg
