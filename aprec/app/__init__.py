"""The ``aprec`` command, demos, experiment runs, reports and figures: the only layer that
loads models by name, prints or draws."""
