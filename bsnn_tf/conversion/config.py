"""One conversion's settings: the method's record and the user's overrides, checked once.

`convert` turns its keyword arguments into a `ConversionConfig` before any
work starts, and the stages read what they need from it: calibration the
percentile, mode and quantiser; synchronize whether to run; build the
method, K, membrane, readout delay and dtype.

Example:
    >>> config = ConversionConfig.resolve(method="bsnn")
    >>> config.phases, config.initial_membrane, config.synchronize
    (4, 0.5, True)
    >>> ConversionConfig.resolve(method="rate").synchronize
    False
"""

import dataclasses
import numbers

import keras

from bsnn_tf import coding, methods
from bsnn_tf.conversion.calibration import DEFAULT_CALIBRATION, check_calibration_mode
from bsnn_tf.conversion.finetune import FineTuning
from bsnn_tf.conversion.latency import LatencySearch
from bsnn_tf.validation import check_timesteps

# Significand bits (below the leading one) of the float types too short for K up to 24.
_HALF_PRECISION_BITS = {"float16": 10, "bfloat16": 7}


def _check_used(calibration, **finetune_arguments):
    """A ValueError naming each argument given (not None) that calibration `calibration`
    does not use: those of calibration "finetune" (unused settings are an error)."""
    given = [name for name, value in finetune_arguments.items() if value is not None]
    if given and calibration != "finetune":
        raise ValueError(
            f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} used by "
            f"calibration='finetune' only, but calibration={calibration!r}: nothing would be "
            f"fine-tuned. Pass calibration='finetune', or leave {' and '.join(given)} out"
            + (" (or pass phases='auto', which scores its search with calibration_labels)."
               if given == ["calibration_labels"] else "."))


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """The settings of one conversion (the arguments of `bsnn_tf.convert`, resolved).

    Attributes:
        method: the `methods.Method` record.
        phases: K; the method's default unless given.
        initial_membrane: the method's default unless given.
        The others are `convert`'s arguments of the same names.
    """

    method: methods.Method
    phases: int
    calibration: str = DEFAULT_CALIBRATION
    percentile: float = 99.99
    channelwise: bool = False
    synchronous: bool = True
    input_encoding: str = "real"
    initial_membrane: float = 0.0
    readout_delay: int = 0
    timesteps: int = 256
    batch_size: int | None = None
    dtype: str = "float32"
    finetuning: FineTuning = None

    @classmethod
    def default(cls, name):
        """The default of setting `name`, e.g. `ConversionConfig.default("percentile")`."""
        (field,) = [f for f in dataclasses.fields(cls) if f.name == name]
        return field.default

    @classmethod
    def resolve(cls, method="bsnn", phases=None, initial_membrane=None, finetuning=None,
                calibration_labels=None, **settings):
        """The config of `convert(method=..., phases=..., ...)`: defaults filled in, each
        argument checked; a ValueError or TypeError names the bad one and what to do.
        `calibration_labels` are only checked to be used (they are not part of it)."""
        method = methods.get(method)
        _check_used(settings.get("calibration", DEFAULT_CALIBRATION),
                    finetuning=finetuning, calibration_labels=calibration_labels)
        config = cls(
            method=method,
            phases=coding.check_phases(method.default_phases if phases is None else phases),
            initial_membrane=(method.initial_membrane if initial_membrane is None
                              else initial_membrane),
            finetuning=FineTuning() if finetuning is None else finetuning,
            **settings,
        )
        config.check()
        return config

    def check(self):
        check_timesteps(self.timesteps)
        check_calibration_mode(self.calibration)
        self._check_finetuning()
        self._check_batch_size()
        self._check_percentile()
        if self.input_encoding not in ("real", "spike"):
            raise ValueError(
                f"input_encoding must be 'real' or 'spike', got {self.input_encoding!r}.")
        if not 0 <= self.initial_membrane < 1:
            raise ValueError(f"initial_membrane={self.initial_membrane} is out of range: use "
                             "[0, 1) (a fraction of the smallest spike weight).")
        if (isinstance(self.readout_delay, bool) or not isinstance(self.readout_delay, int)
                or self.readout_delay < 0):
            raise ValueError(
                f"readout_delay must be an int >= 0 (periods), got {self.readout_delay!r}.")
        bits = _HALF_PRECISION_BITS.get(keras.backend.standardize_dtype(self.dtype))
        if bits is not None and self.phases > bits:
            raise ValueError(
                f"dtype={self.dtype!r} keeps {bits} bits below the leading one, too few for "
                f"phases={self.phases}: membranes below 1 would lose the K-th bit. Use "
                f"phases <= {bits} or dtype='float32'.")

    def _check_finetuning(self):
        if not isinstance(self.finetuning, FineTuning):
            raise TypeError(f"finetuning must be a bsnn_tf.conversion.FineTuning, got "
                            f"{type(self.finetuning).__name__}.")
        self.finetuning.check()
        if self.calibration == "finetune" and not self.method.readout_waits_for_output:
            raise ValueError(
                f"calibration='finetune' trains the first readout, the K-bit quantised ANN, "
                f"which method={self.method.name!r} does not have; use method='bsnn', or "
                "another calibration.")

    def _check_batch_size(self):
        if self.batch_size is None:
            return
        if (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral)
                or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive int (calibration images per "
                             f"batch), got {self.batch_size!r}.")

    def _check_percentile(self):
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, numbers.Real):
            raise TypeError(f"percentile must be a number in (0, 100], got "
                            f"{self.percentile!r} ({type(self.percentile).__name__}); "
                            "e.g. percentile=99.99.")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile={self.percentile} is out of range: use (0, 100].")

    @property
    def per_channel(self):
        """Whether lambda is one per channel: asked for, or fine-tuned per channel."""
        return self.channelwise or (self.calibration == "finetune" and self.finetuning.channelwise)

    @property
    def scale_mode(self):
        """The calibration mode that sets the scales: "finetune" starts from its `start`."""
        return self.finetuning.start if self.calibration == "finetune" else self.calibration

    @property
    def synchronize(self):
        """Whether synchronous layers go in: asked for, and part of the method."""
        return self.synchronous and self.method.synchronous

    def with_phases(self, phases, **changes):
        """This config at K = `phases` (and any other `changes`), checked."""
        config = dataclasses.replace(self, phases=coding.check_phases(phases), **changes)
        config.check()
        return config

    def latency_search(self, latency=None, tolerance=None):
        """The checked `LatencySearch` of `convert(phases="auto", tolerance=..., latency=...)`;
        a ValueError where this conversion has no first readout to search from."""
        if not self.method.readout_waits_for_output:
            raise ValueError(
                f"phases='auto' searches K and the readout T of a BSNN from its first "
                f"readout; method={self.method.name!r} has none. Use method='bsnn', or give "
                f"phases (default {self.method.default_phases}).")
        if latency is not None and not isinstance(latency, LatencySearch):
            raise TypeError(f"latency must be a bsnn_tf.conversion.LatencySearch, got "
                            f"{type(latency).__name__}.")
        latency = latency or LatencySearch()
        if tolerance is not None:
            latency = dataclasses.replace(latency, tolerance=tolerance)
        latency.check()
        for phases in latency.phases:
            self.with_phases(phases)  # each K must suit the other settings (dtype, ...)
        return latency

    def quantizer(self):
        """f(current): what a neuron of this method emits on average (calibration's target)."""
        neuron = self.method.neuron(self.phases, initial_membrane=self.initial_membrane)
        return lambda current: neuron.mean_output(current, self.timesteps)
