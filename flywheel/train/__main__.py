"""``python -m flywheel.train ...``: the cluster profile's training Ray job (:func:`main`)."""

from flywheel.train.job import main

raise SystemExit(main())
