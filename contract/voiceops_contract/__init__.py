"""Names shared by the operator and the inference service.

Neither side may spell a metric name, an environment variable or a probe path
by hand: both import them from here, and both sides' tests check against it.
"""
