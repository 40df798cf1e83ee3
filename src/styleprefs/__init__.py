"""styleprefs: learn a person's own version of an artistic style from the pictures they pick.

The modules, top to bottom (each imports only from its own line or those below it):

- the front doors: ``cli`` (Typer commands) and ``terminal`` (what they show: progress bars, results in words),
  ``server`` (``styleprefs pick``'s loopback page), ``ray_apply`` and ``export`` (apply on a Ray cluster; one look as
  an ONNX, torch.export or TorchScript file);
- ``session``: the ``Session`` and its commands, init / propose / select / refine / apply / status, each a short
  story of calls into the rooms below;
- what the commands do: ``creating`` (init: a new session folder, whole or not at all, and its base networks
  trained), ``training`` (the init and refine loops) and ``checkpoints`` (their files, resumable), ``start`` (G's
  start from the shipped pretrained generator), ``preference`` (the choice model and the proposals drawn from it),
  ``looks`` (the looks as a sheet shows them: drawn for a round, judged, learned from), ``guard`` (every look a
  stylisation), ``refining`` (refine's plan: the rounds it learns from, the personal style target, whether the
  fine-tuning is kept), ``polish`` (a picture finished by optimisation toward its look's loss), ``render`` (any photo
  size as the picked candidate), ``tiling`` (large grids in bounded memory), ``applying``, ``pipeline`` and
  ``outputs`` (apply's options and polish goal, its threaded decode → stylise → write, its output names), ``page``
  (the picking page), ``rounds`` (the rounds as stored: their folders, their picks' files, ``ROUND:INDEX``),
  ``reporting`` (a snapshot of the session in words, for ``status`` and ``history``), ``migrate`` (an older session's
  files upgraded once, when it is opened);
- the session on disk: ``store`` (atomic writes, the lock), ``schema`` (its JSON checked when read), ``inputs`` (the
  photos and paintings kept inside it);
- the models: ``networks`` (G and D), ``kernels`` (their faster CPU routes), ``controls`` (what z means),
  ``losses``, ``vgg`` (the loss network), ``edges`` (how it sees a picture's edges: inside a mirror of itself, and a
  painting by its interior);
- ``images`` (decoding, resizing, saving, the contact sheet), ``files`` (atomic writes, killed writers' leftovers),
  ``config`` (every setting), ``device`` (where and in which precision), ``errors``.
"""

__version__ = "0.1.0"
