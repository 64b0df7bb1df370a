"""What a run reports: the record (``data``), per-layer facts (``layers``), the terminal view (``text``), the PNG
(``plot``), and the ``graphprune inspect`` views (``inspect``)."""
