"""Named counters and gauges that rowhook exposes (``rowhook state``,
Prometheus), labelled with the handler's tenant and name.

A name is 1 to 64 ASCII letters, digits and ``_``, not starting with a
digit; rowhook ignores (and logs once) a call with any other name. The
writes of a call that fails are dropped, like its emits.
"""

from ._host import host


def counter_add(name, delta=1):
    """Adds ``delta`` (0 or more) to the counter ``name``."""
    host.counter_add(name, delta)


def gauge_set(name, value):
    """Sets the gauge ``name`` to ``value``."""
    host.gauge_set(name, float(value))
