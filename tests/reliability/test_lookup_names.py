"""Arguments resolved by name name the class and the argument when the name is unknown.

Every layer argument that ``initializers.get`` / ``regularizers.get`` /
``constraints.get`` resolves (the ones whose name ends in ``_initializer``,
``_regularizer``, ``_constraint``), found from the registered layers'
signatures, must reject an unknown name, a config dict naming an unknown
class, a malformed config dict and a wrong type at construction with an
:class:`~normlab.InvalidParameterError` (a ``ValueError``) whose message
names the layer class, the argument and the accepted names, and take nothing
(no layer name) on the way. A valid name still builds the layer. The same for
``Layer.add_weight``'s and ``compile``'s lookups.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import normlab
from normlab import constraints, initializers, layers, losses, metrics, optimizers, regularizers
from normlab._registry import snake_case
from normlab.layers import base as layer_base

from ._catalogue import _required, public_classes

# the ending of an argument's name -> (module whose get resolves it, its base class, a valid name, its kind)
KINDS = {
    "_initializer": (initializers, initializers.Initializer, "he_normal", "initializer"),
    "_regularizer": (regularizers, regularizers.Regularizer, "l2", "regularizer"),
    "_constraint": (constraints, constraints.Constraint, "non_neg", "constraint"),
}


def _lookup_arguments() -> list[tuple[type, str, str]]:
    """``(layer class, argument, ending)`` for every registered public layer's lookup argument."""
    out = []
    for source, cls in public_classes():
        if source != "layers":
            continue
        for pname in inspect.signature(cls.__init__).parameters:
            for ending in KINDS:
                if pname.endswith(ending):
                    out.append((cls, pname, ending))
    return out


CASES = _lookup_arguments()
PARAMS = [pytest.param(cls, pname, ending, id=f"{cls.__name__}-{pname}") for cls, pname, ending in CASES]


def _counter(cls) -> str:
    """The state of the counter that names ``cls``'s next layer (``count(2)``), without advancing it."""
    return repr(layer_base._name_counters[snake_case(cls.__name__)])


def _rejects(cls, pname, value) -> str:
    """Construct ``cls`` with ``pname=value``; assert the error type and that no layer name was taken."""
    kwargs = dict(_required(cls))
    kwargs[pname] = value
    before = _counter(cls)
    with pytest.raises(normlab.InvalidParameterError) as info:
        cls(**kwargs)
    assert isinstance(info.value, ValueError)
    assert _counter(cls) == before, "a rejected constructor took a layer name"
    msg = str(info.value)
    assert f"'{pname}'" in msg and cls.__name__ in msg, msg
    return msg


def test_the_discovery_finds_the_layers_with_lookup_arguments():
    found = {(cls.__name__, pname) for cls, pname, _ in CASES}
    for expected in [("Dense", "kernel_initializer"), ("Dense", "kernel_regularizer"), ("Dense", "kernel_constraint"),
                     ("BatchNormalization", "gamma_initializer"), ("Conv2D", "bias_constraint"),
                     ("PReLU", "alpha_initializer"), ("LayerNormalization", "beta_regularizer")]:
        assert expected in found
    assert len({cls for cls, _, _ in CASES}) >= 10


def test_invalid_parameter_error_is_a_value_error():
    assert issubclass(normlab.InvalidParameterError, ValueError)


@pytest.mark.parametrize("cls,pname,ending", PARAMS)
def test_unknown_name(cls, pname, ending):
    module, _, valid, kind = KINDS[ending]
    msg = _rejects(cls, pname, "nope_nope")
    assert "'nope_nope'" in msg
    assert f"Unknown {kind} 'nope_nope'" in msg
    # what was expected: the known names are listed
    assert repr(valid) in msg
    assert f"a {kind} name (one of " in msg or f"an {kind} name (one of " in msg


@pytest.mark.parametrize("cls,pname,ending", PARAMS)
def test_config_dict_with_an_unknown_class_name(cls, pname, ending):
    msg = _rejects(cls, pname, {"class_name": "NopeNope", "config": {}})
    assert "'NopeNope'" in msg and "config dict" in msg


@pytest.mark.parametrize("cls,pname,ending", PARAMS)
def test_malformed_config_dict(cls, pname, ending):
    _rejects(cls, pname, {"config": {}})
    _rejects(cls, pname, {"class_name": 3, "config": {}})


@pytest.mark.parametrize("cls,pname,ending", PARAMS)
def test_wrong_type(cls, pname, ending):
    _rejects(cls, pname, 3)
    _rejects(cls, pname, object())


@pytest.mark.parametrize("cls,pname,ending", PARAMS)
def test_a_valid_name_and_config_still_work(cls, pname, ending):
    module, base, valid, _ = KINDS[ending]
    for value in (valid, module.serialize(module.get(valid)), module.get(valid)):
        kwargs = dict(_required(cls))
        kwargs[pname] = value
        layer = cls(**kwargs)
        resolved = getattr(layer, pname, None)
        if resolved is not None:  # the layers that keep the argument keep it resolved
            assert isinstance(resolved, base)
            assert type(resolved) is type(module.get(valid))


def test_positional_argument_is_checked():
    # Dense(units, activation, use_bias, kernel_initializer, ...)
    with pytest.raises(normlab.InvalidParameterError, match="'kernel_initializer' parameter of Dense"):
        layers.Dense(3, None, True, "nope_nope")


def test_the_message_reads_as_the_template():
    with pytest.raises(normlab.InvalidParameterError) as info:
        layers.Dense(3, kernel_initializer="nope")
    msg = str(info.value)
    assert msg.startswith("The 'kernel_initializer' parameter of Dense must be an initializer name (one of ")
    assert "Got 'nope' instead. Unknown initializer 'nope'." in msg
    assert "'glorot_uniform'" in msg and "Initializer instance" in msg
    with pytest.raises(normlab.InvalidParameterError, match=r"Got 'nope' instead\. Unknown regularizer 'nope'"):
        layers.BatchNormalization(gamma_regularizer="nope")
    # None is named as accepted where the argument takes None
    with pytest.raises(normlab.InvalidParameterError, match=r"a Constraint instance or None\. Got 'nope'"):
        layers.Dense(3, kernel_constraint="nope")


def test_errors_of_a_known_class_config_stay_its_own():
    # the class is known: its own check of the config's values words the error
    with pytest.raises(normlab.InvalidParameterError, match="'stddev' parameter of RandomNormal"):
        layers.Dense(3, kernel_initializer={"class_name": "RandomNormal", "config": {"stddev": -1.0}})


def test_keras_sentence_follows_where_a_layer_declares_it():
    class _KerasWorded(layers.Dense):  # leading underscore: not registered
        _keras_messages = {"kernel_initializer": lambda v: f"Could not interpret initializer identifier: {v}"}

    with pytest.raises(normlab.InvalidParameterError) as info:
        _KerasWorded(3, kernel_initializer="nope")
    msg = str(info.value)
    assert "'kernel_initializer' parameter of _KerasWorded" in msg
    assert "Could not interpret initializer identifier: nope" in msg


class _AddsWeight(layers.Layer):
    def __init__(self, arg, value, **kwargs):
        super().__init__(**kwargs)
        self._arg, self._value = arg, value

    def build(self, input_shape):
        self.add_weight("w", (input_shape[-1],), **{self._arg: self._value})

    def call(self, x, training):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


@pytest.mark.parametrize("arg", ["initializer", "regularizer", "constraint"])
def test_add_weight_names_the_layer_and_the_argument(arg):
    layer = _AddsWeight(arg, "nope_nope", name="adds")
    with pytest.raises(normlab.InvalidParameterError) as info:
        layer(np.zeros((2, 3)))
    msg = str(info.value)
    assert "add_weight" in msg and f"'{arg}'" in msg and "'adds'" in msg and "Unknown" in msg
    assert not layer.built and layer.params == {} and layer.buffers == {}
    valid = {"initializer": "ones", "regularizer": "l2", "constraint": "non_neg"}[arg]
    ok = _AddsWeight(arg, valid)
    ok(np.zeros((2, 3)))
    assert ok.built and ok.params["w"].shape == (3,)


def _model():
    return normlab.Sequential([normlab.Input((3,)), layers.Dense(2)])


@pytest.mark.parametrize("kwargs,arg", [
    ({"optimizer": "nope_nope", "loss": "mse"}, "optimizer"),
    ({"optimizer": {"class_name": "NopeNope", "config": {}}, "loss": "mse"}, "optimizer"),
    ({"optimizer": 3, "loss": "mse"}, "optimizer"),
    ({"optimizer": "sgd", "loss": "nope_nope"}, "loss"),
    ({"optimizer": "sgd", "loss": 3}, "loss"),
    ({"optimizer": "sgd", "loss": "mse", "metrics": ["mae", "nope_nope"]}, "metrics"),
    ({"optimizer": "sgd", "loss": "mse", "metrics": [3]}, "metrics"),
    ({"optimizer": "sgd", "loss": "mse", "weighted_metrics": ["nope_nope"]}, "weighted_metrics"),
])
def test_compile_names_compile_and_the_argument(kwargs, arg):
    model = _model()
    with pytest.raises(normlab.InvalidParameterError) as info:
        model.compile(**kwargs)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "Sequential.compile" in msg and f"'{arg}'" in msg, msg
    assert getattr(model, "optimizer", None) is None and not getattr(model, "metrics", None)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])  # the same model compiles afterwards


def test_compile_unknown_name_message():
    with pytest.raises(normlab.InvalidParameterError) as info:
        _model().compile(optimizer="nope", loss="mse")
    msg = str(info.value)
    assert msg.startswith("The 'optimizer' parameter of Sequential.compile must be an optimizer name (one of ")
    assert "'adam'" in msg and "Got 'nope' instead. Unknown optimizer 'nope'." in msg


def test_compile_nested_lookup_keeps_its_own_message():
    # the optimizer is known; its schedule is not: the schedule's message, not one about 'optimizer'
    bad = {"class_name": "SGD", "config": {"learning_rate": {"class_name": "NopeNope", "config": {}}}}
    with pytest.raises(ValueError, match="Unknown learning rate schedule 'NopeNope'"):
        _model().compile(optimizer=bad, loss="mse")


def test_valid_compile_names_still_work():
    model = _model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae", "accuracy"])
    assert isinstance(model.optimizer, optimizers.Adam)
    model.compile(optimizer={"class_name": "SGD", "config": {"learning_rate": 0.1}}, loss=losses.Huber())
    assert isinstance(model.optimizer, optimizers.SGD)


@pytest.mark.parametrize("module,kind", [(initializers, "initializer"), (regularizers, "regularizer"),
                                         (constraints, "constraint"), (optimizers, "optimizer"),
                                         (losses, "loss"), (metrics, "metric")])
def test_plain_get_keeps_its_message(module, kind):
    # the getters' own message (the command line quotes it) lists the known names
    with pytest.raises(ValueError, match=rf"^Unknown {kind} 'nope_nope'\. Known names: "):
        module.get("nope_nope")
