"""Model transforms: a model as a supermask (`supermasking`), a supermask as
stock layers (`baking`), the units a mask disconnected removed
(`dead_units`), and the layer-by-layer copy they share (`cloning`)."""
