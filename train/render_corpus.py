"""Render the onset corpus: ``python -m train.render_corpus --out /work/corpus --hours 3 --workers 2``.

See ``train/corpus/__init__.py`` and train/README.md. The ``valid`` split is never trained or tuned on.
"""

import sys

from train.corpus.render import main

if __name__ == "__main__":
    sys.exit(main())
