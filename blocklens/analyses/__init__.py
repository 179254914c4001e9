"""The building blocks as analyses: numbers computed from one image's activations and gradients.

One module per block: :mod:`.dictionary` (semantic dictionary), :mod:`.grid` (activation grid),
:mod:`.attribution` (spatial and channel attribution), :mod:`.groups` (neuron groups). Each exposes one
function ``(model, image, layer, ...)`` returning a plain result object with ``to_json()``; icons are fetched
through the icon store only when asked for.
"""
