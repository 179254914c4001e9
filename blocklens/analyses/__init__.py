"""Analyses: the numbers of the building blocks (attribution, semantic dictionary, neuron groups, faithfulness).

Each block is a function ``(model, image, layer, ...)`` returning a plain result object with ``to_json()``. Nothing
here renders or encodes a picture: a result's ``icons`` slot is filled by the floor above (:mod:`blocklens.blocks`,
:mod:`blocklens.explain`), which knows the icon store.
"""
