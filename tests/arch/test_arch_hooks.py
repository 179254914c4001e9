"""No hook is left on any submodule of a real architecture after a normal run, nor after one that raised."""
import pytest
import torch

import blocklens as bl
from .archspecs import MID_LAYER, hook_counts, total_hooks

pytestmark = pytest.mark.arch


class Boom(RuntimeError):
    pass


def test_no_hooks_left_after_a_normal_run(arch):
    """Activations, a probe with gradients, an icon and a spatial attribution; the hooks are checked first, then
    whether each step ran (a step that fails for another reason is reported after the hook count)."""
    model_id, m = arch
    net = m.module
    before = hook_counts(net)
    layer = MID_LAYER[model_id]
    x = torch.rand(1, 3, 224, 224)

    def probe_with_grad():
        with m.probe([layer], grad=True) as p:
            p.run(m.normalize(x))
            p.activations[m.layer(layer).name].sum().backward()

    steps = {"activations": lambda: m.activations(x, [layer]), "probe(grad=True)": probe_with_grad,
             "render": lambda: bl.render(m, [f"{layer}:0"], size=32, steps=1, progress=False),
             "spatial_attribution": lambda: bl.spatial_attribution(m, bl.bundled_image("dog"), layer, 0)}
    errors = {}
    for what, step in steps.items():
        try:
            step()
        except Exception as e:
            errors[what] = f"{type(e).__name__}: {e}"
    assert hook_counts(net) == before
    assert total_hooks(net) == 0
    assert not errors, errors


def test_no_hooks_left_after_an_exception_in_a_probe(arch):
    model_id, m = arch
    net = m.module
    layer = MID_LAYER[model_id]

    def boom(_t):
        raise Boom("edit raised")

    with pytest.raises(Boom):
        with m.probe([layer], edit={layer: boom}) as p:
            p.run(torch.rand(1, 3, 224, 224))
    assert total_hooks(net) == 0, hook_counts(net)


def test_no_hooks_left_after_a_forward_raised_inside_explain(arch, tmp_path):
    """A module deep in the network raises on its second call: the first forward (prediction) passes, the next one
    runs with explain's probes registered."""
    model_id, m = arch
    net = m.module
    target = dict(net.named_modules())[MID_LAYER[model_id]]
    calls = {"n": 0}
    original = target.forward

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise Boom("forward raised")
        return original(*a, **kw)

    target.forward = failing
    try:
        with pytest.raises(Exception) as err:
            bl.explain(bl.bundled_image("dog"), model=m, layers=[MID_LAYER[model_id]], preset="quick",
                       icons=False, grids=False, store=False, progress=False)
    finally:
        del target.forward  # back to the class's forward
    assert total_hooks(net) == 0, hook_counts(net)
    assert isinstance(err.value, Boom), f"explain raised {type(err.value).__name__}: {err.value}"
    assert calls["n"] >= 2


def test_no_hooks_left_after_a_bad_class(arch):
    model_id, m = arch
    with pytest.raises(bl.BlocklensError) as err:
        bl.explain(bl.bundled_image("dog"), model=m, layers=[MID_LAYER[model_id]], classes=["no such class", 1],
                   preset="quick", icons=False, grids=False, store=False, progress=False)
    assert total_hooks(m.module) == 0, hook_counts(m.module)
    assert "no such class" in str(err.value)
