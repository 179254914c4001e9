"""Feature visualization: parameterizations, transforms, objectives, render loop."""
