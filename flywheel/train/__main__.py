"""``python -m flywheel.train ...``: the cluster profile's training Ray job (:func:`main`)."""

from flywheel.train import main

raise SystemExit(main())
