"""One scoring engine: files or bytes in, one row per image out.

Every path that scores more than one image uses it: ``predict`` on the command line, the local and
Ray batch engines (:mod:`medcnn.distributed.scoring`), site recalibration (command and page), the
app's Batch page and the PACS path. Each of them used to read, choose the model, batch and catch
errors in its own way; here it is done once:

1. each source (a path, or ``(name, bytes)``) is read with :func:`medcnn.io.read_image`;
2. its model is the one given (never rerouted), else the one :mod:`medcnn.routing` asks first;
3. the images of one model go through :meth:`~medcnn.inference.Predictor.predict_batch` in one
   forward pass per chunk; when that pass fails or warns, image by image, so each error and
   warning lands on its own file;
4. with no model given, :mod:`medcnn.routing` decides which model answers (the app's rule), in its
   two passes: :func:`~medcnn.routing.next_to_ask` names the card an image still needs (a PNG/JPEG
   the chest X-ray model's gate withholds is asked of the CT model; those images again in one pass
   per chunk), then :func:`~medcnn.routing.decide` routes it; the row's ``routed`` says how its
   model was chosen;
5. whatever fails becomes a row with its error and the stage it failed at; the others still run.

A row (:data:`ROW_KEYS`, snake_case) is what ``predict --json`` prints for a file. Its ``decision``
is :data:`~medcnn.inference.NOT_ANALYSED` (``"not analysed"``) when the out-of-distribution gate
withholds the image (the probabilities stay in the row for the record), and ``called`` lists the
labels the decision names (None then). ``routed`` is how the model was chosen
(:meth:`medcnn.routing.Route.describe`: :data:`medcnn.routing.NAMED` for a given model,
``"auto-chosen for PNG/JPEG"``, the rerouting, or why no model's gate accepts the image; None when
no model served the file). ``caveat`` is what the serving card says beside a result on this kind
of input (:func:`medcnn.visualize.presentation.caveat`; None when it says nothing, or when the
image is withheld). Each file's warnings are collected into its row
(:func:`medcnn.notices.collected`), never printed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcnn.notices import collected
from medcnn.inference import NOT_ANALYSED, Prediction, Predictor, check_modality
from medcnn.io import MedImage, read_image
from medcnn.routing import NAMED, candidates, decide, first_card, next_to_ask
from medcnn.visualize.presentation import caveat

__all__ = ["ROW_KEYS", "SKIP_REASONS", "STAGES", "Scored", "Scorer", "Source", "analysed_logits", "left_out_by_class",
           "new_row"]

#: Keys of one row, in order (those of ``predict --json`` entries).
ROW_KEYS = ("file", "ok", "error", "error_stage", "model", "decision", "label", "called", "probabilities",
            "positive_prob", "above_threshold", "threshold", "findings", "seconds", "ood", "warnings", "routed",
            "caveat")
#: Where a failed row stopped: the file could not be read, no model reads it (or the model could not
#: be loaded), or preprocessing / the forward pass failed.
STAGES = ("read", "model", "predict")

#: A path, or ``(name, bytes)`` for an upload, a ZIP member or a PACS instance.
Source = str | Path | tuple[str, bytes]


def new_row(name: str) -> dict[str, Any]:
    """An empty row for ``name`` (not yet scored: ``ok`` False)."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(file=name, ok=False, warnings=[])
    return row


@dataclass
class Scored:
    """One source's outcome.

    Attributes:
        row: The row (:data:`ROW_KEYS`).
        prediction: The prediction (with the display image), None when the row failed.
        image: The decoded image, None when it could not be read.
        card_path: The card that served it (the last one asked when that failed), None when none did.
        exception: What the row's ``error`` says, as raised (None when the row did not fail), for
            a caller that tells a refusal (a modality no model reads) from a failure by its type.
    """

    row: dict[str, Any]
    prediction: Prediction | None = None
    image: MedImage | None = field(default=None, repr=False)
    card_path: Path | None = None
    exception: Exception | None = field(default=None, repr=False)


def _fail(scored: Scored, stage: str, e: Exception) -> None:
    if scored.row["ok"]:  # a later model failed: the earlier (withheld) result is no answer
        scored.row = {**new_row(scored.row["file"]), "warnings": scored.row["warnings"]}
        scored.prediction = None
    scored.row.update(error=f"{type(e).__name__}: {e}", error_stage=stage)
    scored.exception = e


class Scorer:
    """Scores sources in batches; one loaded :class:`~medcnn.inference.Predictor` per model card.

    Args:
        model: Card path serving every image, or a loaded Predictor (or anything with its
            ``card``, ``predict`` and ``predict_batch``, e.g. the app's compute-slotted one); None:
            chosen per image by :func:`medcnn.routing.route` (modality, then the models' gates).
        weights_dir: Folder of the cards for the automatic choice (default
            :func:`medcnn.inference.default_weights_dir`).
        device: ``cpu`` / ``cuda`` (default: ``MEDCNN_DEVICE``, else auto).
        batch_size: Images per forward pass.
        keep_images: Keep each prediction's pipeline result (display image, tensor) and the decoded
            image in :class:`Scored` (the app's thumbnails and explanations); off, only the rows
            and the predictions' numbers are kept, so a folder of any size fits in memory.
        keep_steps: Also keep every preprocessing step's image (with ``keep_images``).
        loader: ``loader(card_path) -> Predictor``: how a card's model is loaded (default:
            ``Predictor(card_path, device=device)``); the app passes its shared, compute-slotted one.
        named: The rows' ``routed`` when the model is given (default :data:`medcnn.routing.NAMED`;
            the app says where it was chosen).
    """

    def __init__(self, model: str | Path | Predictor | None = None, weights_dir: str | Path | None = None,
                 device: str | None = None, batch_size: int = 32, keep_images: bool = False,
                 keep_steps: bool = False, loader: Callable[[Path], Predictor] | None = None,
                 named: str = NAMED) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._fixed = None if model is None or isinstance(model, (str, Path)) else model
        self.model = None if model is None or self._fixed is not None else Path(model)
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.device = device
        self.batch_size = int(batch_size)
        self.keep_images = keep_images
        self.keep_steps = keep_steps and keep_images
        self.loader = loader
        self.named = named
        self.predictors: dict[Path, Predictor] = {}

    def predictor(self, card_path: Path | None) -> Predictor:
        """The loaded Predictor of ``card_path`` (the fixed one when the scorer was given one)."""
        if self._fixed is not None:
            return self._fixed
        if card_path not in self.predictors:
            self.predictors[card_path] = (self.loader(card_path) if self.loader is not None
                                          else Predictor(card_path, device=self.device))
        return self.predictors[card_path]

    def _prepare(self, source: Source) -> Scored:
        """Read one source and choose (and load) its model; a failure is recorded in the row."""
        name, data = (source[0], source[1]) if isinstance(source, tuple) else (str(source), source)
        scored = Scored(new_row(name))
        caught: list[str] = []
        try:
            with collected() as caught:  # reported per file, not as tracebacks
                try:
                    scored.image = read_image(data)
                except (ValueError, OSError) as e:  # UnsupportedImageError is a ValueError
                    _fail(scored, "read", e)
                    return scored
                try:
                    if self._fixed is not None:
                        check_modality(self._fixed.card, scored.image.meta)
                    else:
                        scored.card_path = self.model or first_card(scored.image.meta, self.weights_dir)
                        check_modality(self.predictor(scored.card_path).card, scored.image.meta)
                except (ValueError, OSError) as e:  # CardError is a ValueError
                    _fail(scored, "model", e)
        finally:
            scored.row["warnings"] = list(caught)
        return scored

    def _fill(self, scored: Scored, pred: Prediction) -> None:
        d = pred.to_dict()
        d.pop("logits")
        scored.prediction = pred
        scored.row = {**new_row(scored.row["file"]), "warnings": scored.row["warnings"]}  # no earlier model's keys
        scored.row.update(d, ok=True, called=pred.decided,
                          caveat=caveat(self.predictor(scored.card_path).card, pred, scored.image.meta))

    def _predict_group(self, card_path: Path | None, members: list[Scored]) -> list[Prediction | None]:
        """One forward pass for the images of one model; image by image when that pass fails or warns.
        A failure is recorded in its row (None in the list)."""
        try:
            predictor = self.predictor(card_path)
        except (ValueError, OSError) as e:  # CardError is a ValueError
            for scored in members:
                _fail(scored, "model", e)
            return [None] * len(members)
        try:
            with collected() as caught:
                preds = predictor.predict_batch([s.image for s in members], keep_steps=self.keep_steps)
            if not caught:
                return list(preds)
        except (ValueError, OSError, RuntimeError):
            pass
        out: list[Prediction | None] = []
        for scored in members:
            caught = []
            try:
                with collected() as caught:
                    out.append(predictor.predict(scored.image, keep_steps=self.keep_steps))
            except (ValueError, OSError, RuntimeError) as e:
                _fail(scored, "predict", e)
                out.append(None)
            finally:
                scored.row["warnings"] = list(dict.fromkeys(scored.row["warnings"] + caught))
        return out

    def _route(self, chunk: list[Scored]) -> None:
        """The routing rule (:mod:`medcnn.routing`) for the scored images of a chunk: a given model is
        never rerouted; under auto, each round asks :func:`~medcnn.routing.next_to_ask` which card each
        image still needs, predicts the images waiting on one card together (one pass per card), and
        routes (:func:`~medcnn.routing.decide`) the images that need nothing more."""
        scored_ok = [s for s in chunk if s.prediction is not None]
        if self.model is not None or self._fixed is not None:
            for scored in scored_ok:
                scored.row["routed"] = self.named
            return
        asked = {id(s): {str(s.card_path): s.prediction} for s in scored_ok}
        plans: dict[str, list[tuple[str, str]]] = {}  # modality -> the models to ask, found once a chunk
        pending = scored_ok
        while pending:
            wanted: dict[str, list[Scored]] = {}
            for scored in pending:
                caught: list[str] = []
                try:
                    with collected() as caught:  # e.g. a card of the folder skipped: into the row
                        meta = scored.image.meta
                        if meta.modality not in plans:
                            plans[meta.modality] = candidates(meta, self.weights_dir)
                        card_path = next_to_ask(plans[meta.modality], asked[id(scored)])
                        r = None if card_path else decide(meta, plans[meta.modality], asked[id(scored)],
                                                          self.weights_dir)
                except ValueError as e:  # a card that became unreadable (CardError)
                    _fail(scored, "model", e)
                    continue
                finally:
                    scored.row["warnings"] = list(dict.fromkeys(scored.row["warnings"] + caught))
                if r is None:
                    wanted.setdefault(card_path, []).append(scored)
                    continue
                scored.card_path = Path(r.card_path)
                if r.prediction is not scored.prediction:
                    self._fill(scored, r.prediction)
                scored.row["routed"] = r.describe()
            pending = []
            for card_path, members in wanted.items():
                for scored in members:
                    scored.card_path = Path(card_path)
                for scored, pred in zip(members, self._predict_group(Path(card_path), members)):
                    if pred is not None:
                        asked[id(scored)][card_path] = pred
                        pending.append(scored)

    def iter_score(self, sources: Sequence[Source]) -> Iterator[Scored]:
        """Score ``sources`` in order, ``batch_size`` at a time, yielding each chunk's outcomes as soon
        as its forward pass is done (never more than one chunk of images in memory).

        Yields:
            One :class:`Scored` per source, in order; a failed one has ``row["ok"]`` False and
            ``row["error"]`` / ``row["error_stage"]`` set.
        """
        for start in range(0, len(sources), self.batch_size):
            chunk = [self._prepare(s) for s in sources[start:start + self.batch_size]]
            groups: dict[Path | None, list[Scored]] = {}
            for scored in chunk:
                if scored.row["error"] is None:
                    groups.setdefault(scored.card_path, []).append(scored)
            for card_path, members in groups.items():
                for scored, pred in zip(members, self._predict_group(card_path, members)):
                    if pred is not None:
                        self._fill(scored, pred)
            self._route(chunk)
            if not self.keep_images:  # pixels never outlive their chunk
                for scored in chunk:
                    scored.image = None
                    if scored.prediction is not None:
                        scored.prediction.pipeline_result = None
            yield from chunk

    def score(self, sources: Sequence[Source], progress: Callable[[int, int], None] | None = None) -> list[Scored]:
        """All of :meth:`iter_score`, with ``progress(done, total)`` called after each chunk."""
        out: list[Scored] = []
        for scored in self.iter_score(sources):
            out.append(scored)
            if progress is not None and (len(out) % self.batch_size == 0 or len(out) == len(sources)):
                progress(len(out), len(sources))
        return out

    def rows(self, sources: Sequence[Source]) -> list[dict[str, Any]]:
        """Just the rows of :meth:`score`."""
        return [s.row for s in self.score(sources)]


#: Why an image a recalibration cannot use was left out (:func:`analysed_logits`), by where it stopped.
SKIP_REASONS = {"read": "unreadable (not DICOM / PNG / JPEG, or missing)",
                "model": "DICOM modality the model does not read",
                "predict": "preprocessing failed",
                "withheld": "withheld by the out-of-distribution gate"}


def analysed_logits(scorer: Scorer, sources: Sequence[Source],
                    progress: Callable[[int, int], None] | None = None) -> tuple[Any, Any, dict[str, int]]:
    """Logits of the images a model analyses, and why the others were left out.

    An image is left out when it cannot be read, is a DICOM of a modality the card does not list,
    fails preprocessing, or is withheld by the card's out-of-distribution gate: the app would not
    show a result for it, so it must not shape an operating point.

    Args:
        scorer: A scorer with one model (``Scorer(card_path_or_predictor)``).
        sources: Image file paths or ``(name, bytes)``.
        progress: Called with (done, total) after each chunk.

    Returns:
        ``(logits, kept, skipped)``: float32 (M, C) raw logits, int64 (M,) indices into ``sources``
        of those rows, and reason (:data:`SKIP_REASONS`) -> count of the images left out.
    """
    logits, kept, left_out = left_out_by_class(scorer, sources, [""] * len(sources), progress)
    return logits, kept, left_out.get("", {})


def _left_out_stage(scored: Scored) -> str | None:
    """Why :func:`analysed_logits` leaves a source out (a :data:`SKIP_REASONS` key), None when it is used."""
    return scored.row["error_stage"] or ("withheld" if scored.row["decision"] == NOT_ANALYSED else None)


def left_out_by_class(scorer: Scorer, sources: Sequence[Source], classes: Sequence[str],
                      progress: Callable[[int, int], None] | None = None) -> tuple[Any, Any, dict[str, dict[str, int]]]:
    """:func:`analysed_logits`, with the images left out counted per class instead of in total.

    Args:
        scorer, sources, progress: As for :func:`analysed_logits`.
        classes: The class of each source (same length as ``sources``).

    Returns:
        ``(logits, kept, left_out)``: as :func:`analysed_logits`, and class -> reason
        (:data:`SKIP_REASONS`) -> count of that class's images left out.

    Raises:
        ValueError: ``classes`` and ``sources`` differ in length.
    """
    import numpy as np

    if len(classes) != len(sources):
        raise ValueError(f"one class per source is needed: {len(sources)} sources, {len(classes)} classes")
    logits, kept, left_out = [], [], {}
    for i, scored in enumerate(scorer.score(sources, progress)):
        stage = _left_out_stage(scored)
        if stage is None:
            logits.append(scored.prediction.logits)
            kept.append(i)
            continue
        per_class = left_out.setdefault(str(classes[i]), {})
        per_class[SKIP_REASONS[stage]] = per_class.get(SKIP_REASONS[stage], 0) + 1
    n_labels = len(logits[0]) if logits else len(scorer.predictor(scorer.model).card.labels)
    return (np.asarray(logits, dtype=np.float32).reshape(-1, n_labels), np.asarray(kept, dtype=np.int64), left_out)
