"""Running passes: the state they read and return (``state``), the pass contract (``base``), the one runner
(``runner``) and the ``--method`` presets with their options (``presets``)."""
