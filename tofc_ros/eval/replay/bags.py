"""Reading replay input bags and writing output bags with rosbags (rosbag2: mcap and sqlite3; no rclpy).

Input: a rosbag2 directory (``metadata.yaml`` + ``*.mcap`` or ``*.db3``, as ``ros2 bag record`` writes it) or a
single ``.mcap`` / ``.db3`` file. A replay bag holds one camera topic (sensor_msgs/Image or CompressedImage) and,
optionally, a tofc_msgs/Question topic; other topics (``/tf``, ``/diagnostics``, ...) are listed and skipped.
Every camera and question message is deserialised once while loading, so a malformed message or a topic recorded
with a different Question definition stops the replay before anything is played, with a :class:`BagError` naming
the topic, the message index and its log time.

Recorded features: :func:`read_feature_bag` loads a bag of tofc_msgs/CompressedFeatures and Questions (what the
live replay records with ``record_features``, with the Answers it got) for offline re-answering
(:mod:`tofc_ros.eval.offline`).

Output: :class:`BagWriter`, a rosbag2 directory in either storage whose connections carry the message definition
and RIHS01 hash from the typestore (what ``ros2 bag record`` would store), written from serialised CDR bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from tofc_ros.eval.replay.typestore import ANSWER, COMPRESSED_IMAGE, FEATURES, IMAGE, QUESTION, TOFC_TYPES, typestore
from tofc_ros.pipeline.records import stamp_ns

__all__ = [
    "STORAGES",
    "BackgroundBagWriter",
    "BagError",
    "BagWriter",
    "Frame",
    "BagQuestion",
    "FeatureBag",
    "ReplayBag",
    "iter_messages",
    "read_feature_bag",
    "read_replay_bag",
]

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CAMERA_TYPES = (IMAGE, COMPRESSED_IMAGE)


class BagError(ValueError):
    """A bag that cannot be replayed: missing, unreadable, ambiguous or malformed; the message says which part."""


@dataclass(frozen=True)
class Frame:
    """One camera message: log time, topic, type, its CDR bytes and the image header stamp (ns)."""

    t_ns: int
    topic: str
    msgtype: str
    data: bytes
    stamp_ns: int


@dataclass(frozen=True)
class BagQuestion:
    """One question to ask at log time ``t_ns`` (from the bag or a questions file); ``image_stamp_ns`` 0 = latest."""

    t_ns: int
    question_id: str
    text: str
    camera: str = ""
    image_stamp_ns: int = 0
    timeout_s: float = 0.0


@dataclass
class ReplayBag:
    """What a replay plays: camera frames and questions in log-time order, plus what was skipped."""

    path: Path
    storage: str
    frames: list[Frame]
    questions: list[BagQuestion]
    camera_topic: str
    questions_topic: str | None
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> msgtype

    @property
    def start_ns(self) -> int:
        times = [f.t_ns for f in self.frames] + [q.t_ns for q in self.questions]
        return min(times) if times else 0

    @property
    def end_ns(self) -> int:
        times = [f.t_ns for f in self.frames] + [q.t_ns for q in self.questions]
        return max(times) if times else 0


def _storage_of(path: Path) -> str:
    suffixes = {p.suffix for p in path.iterdir()} if path.is_dir() else {path.suffix}
    if ".mcap" in suffixes:
        return "mcap"
    if ".db3" in suffixes:
        return "sqlite3"
    return "unknown"


def _open(path: str | Path) -> Reader:
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {str(path)!r} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except BagError:
        raise
    except Exception as exc:  # rosbags raises ReaderError, FileNotFoundError, yaml and sqlite errors
        raise BagError(f"cannot open bag {str(path)!r}: {exc}") from exc
    return reader


def _pick(connections, types: tuple[str, ...], wanted: str | None, what: str, path: Path, required: bool) -> str | None:
    by_topic = {c.topic: c.msgtype for c in connections}
    if wanted:
        if wanted not in by_topic:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(by_topic.items())) or "none"
            raise BagError(f"{what} topic {wanted!r} is not in bag {str(path)!r}; its topics: {listing}")
        if by_topic[wanted] not in types:
            raise BagError(
                f"{what} topic {wanted!r} in bag {str(path)!r} has type {by_topic[wanted]}, "
                f"expected one of {', '.join(types)}"
            )
        return wanted
    matches = sorted(t for t, m in by_topic.items() if m in types)
    if len(matches) > 1:
        raise BagError(f"bag {str(path)!r} has several {what} topics ({', '.join(matches)}): name one")
    if not matches:
        if required:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(by_topic.items())) or "none"
            raise BagError(f"bag {str(path)!r} has no {what} topic of type {' or '.join(types)}; its topics: {listing}")
        return None
    return matches[0]


def _check_definition(conn, path: Path) -> None:
    """A tofc_msgs connection recorded with another definition of the type would deserialise into garbage."""
    if conn.msgtype not in TOFC_TYPES:
        return
    digest = conn.digest or ""
    if digest.startswith("RIHS01_") and digest != typestore().hash_rihs01(conn.msgtype):
        raise BagError(
            f"topic {conn.topic!r} in bag {str(path)!r} was recorded with another definition of "
            f"{conn.msgtype} (type hash {digest}, ours {typestore().hash_rihs01(conn.msgtype)})"
        )


def read_replay_bag(
    path: str | Path, camera_topic: str | None = None, questions_topic: str | None = None, need_questions: bool = True
) -> ReplayBag:
    """Load a bag's camera frames and questions.

    Args:
        path: rosbag2 directory or single .mcap/.db3 file.
        camera_topic: the camera topic to play; None picks the bag's only Image/CompressedImage topic.
        questions_topic: the Question topic; None picks the bag's only one (or none when it has none).
        need_questions: False when the questions come from a file: a bag without a Question topic is fine.

    Returns:
        ReplayBag with frames and questions sorted by log time.

    Raises:
        BagError: missing/unreadable bag, unknown or ambiguous topic, malformed message, foreign type definition.
    """
    path = Path(path)
    store = typestore()
    reader = _open(path)
    try:
        conns = list(reader.connections)
        cam = _pick(conns, CAMERA_TYPES, camera_topic, "camera", path, required=True)
        qtopic = _pick(conns, (QUESTION,), questions_topic, "questions", path, required=False)
        if need_questions and qtopic is None:
            raise BagError(f"bag {str(path)!r} has no tofc_msgs/msg/Question topic and no questions file was given")
        selected = [c for c in conns if c.topic in (cam, qtopic)]
        for conn in selected:
            _check_definition(conn, path)
        frames: list[Frame] = []
        questions: list[BagQuestion] = []
        counts: dict[str, int] = {}
        for conn, t_ns, raw in reader.messages(connections=selected):
            index = counts[conn.topic] = counts.get(conn.topic, -1) + 1
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # truncated or corrupt CDR: rosbags raises assorted errors
                raise BagError(
                    f"message #{index} on {conn.topic!r} ({conn.msgtype}) at log time {t_ns} ns in "
                    f"{str(path)!r} is malformed: {type(exc).__name__}: {exc}"
                ) from exc
            if conn.topic == cam:
                frames.append(Frame(t_ns, conn.topic, conn.msgtype, bytes(raw), stamp_ns(msg.header.stamp)))
            else:
                questions.append(
                    BagQuestion(
                        t_ns, msg.question_id, msg.text, msg.camera, stamp_ns(msg.image_stamp), float(msg.timeout_s)
                    )
                )
        skipped = {c.topic: c.msgtype for c in conns if c.topic not in (cam, qtopic)}
        storage = _storage_of(path)
    finally:
        reader.close()
    frames.sort(key=lambda f: f.t_ns)
    questions.sort(key=lambda q: q.t_ns)
    ids = [q.question_id for q in questions]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise BagError(f"bag {str(path)!r} repeats question ids {dupes[:5]}: every question needs its own id")
    return ReplayBag(path, storage, frames, questions, cam, qtopic, skipped)


@dataclass
class FeatureBag:
    """A recorded bag's CompressedFeatures and Questions in one log-time order, and the Answers it holds.

    Attributes:
        events: (log time ns, "features" or "question", CDR bytes or the BagQuestion), sorted by log time (features
            first at equal times: a question recorded with its frame's arrival pairs with it).
        answers: the recorded Answers' CDR bytes by question_id (the live answers, when the bag has them).
    """

    path: Path
    storage: str
    events: list[tuple[int, str, object]]
    answers: dict[str, bytes]
    features_topic: str
    questions_topic: str
    answers_topic: str | None

    @property
    def questions(self) -> list[BagQuestion]:
        return [e[2] for e in self.events if e[1] == "question"]


def read_feature_bag(
    path: str | Path,
    features_topic: str | None = None,
    questions_topic: str | None = None,
    answers_topic: str | None = None,
) -> FeatureBag:
    """Load a bag's CompressedFeatures, Questions and (optionally) Answers for offline re-answering.

    Args:
        path: rosbag2 directory or single .mcap/.db3 file (e.g. a live replay's ``<output_dir>/answers``).
        features_topic, questions_topic, answers_topic: None picks the bag's only topic of that type (answers may be
            absent).

    Raises:
        BagError: missing/unreadable bag, unknown or ambiguous topic, malformed message, foreign type definition,
            repeated question ids.
    """
    path = Path(path)
    store = typestore()
    reader = _open(path)
    try:
        conns = list(reader.connections)
        ftopic = _pick(conns, (FEATURES,), features_topic, "features", path, required=True)
        qtopic = _pick(conns, (QUESTION,), questions_topic, "questions", path, required=True)
        atopic = _pick(conns, (ANSWER,), answers_topic, "answers", path, required=False)
        selected = [c for c in conns if c.topic in (ftopic, qtopic, atopic)]
        for conn in selected:
            _check_definition(conn, path)
        events: list[tuple[int, str, object]] = []
        answers: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        for conn, t_ns, raw in reader.messages(connections=selected):
            index = counts[conn.topic] = counts.get(conn.topic, -1) + 1
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # truncated or corrupt CDR: rosbags raises assorted errors
                raise BagError(
                    f"message #{index} on {conn.topic!r} ({conn.msgtype}) at log time {t_ns} ns in "
                    f"{str(path)!r} is malformed: {type(exc).__name__}: {exc}"
                ) from exc
            if conn.topic == ftopic:
                events.append((t_ns, "features", bytes(raw)))
            elif conn.topic == qtopic:
                q = BagQuestion(
                    t_ns, msg.question_id, msg.text, msg.camera, stamp_ns(msg.image_stamp), float(msg.timeout_s)
                )
                events.append((t_ns, "question", q))
            else:
                answers.setdefault(msg.question_id, bytes(raw))  # a duplicate answer is the server's bug: the first
        storage = _storage_of(path)
    finally:
        reader.close()
    events.sort(key=lambda e: (e[0], e[1] != "features"))
    ids = [e[2].question_id for e in events if e[1] == "question"]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise BagError(f"bag {str(path)!r} repeats question ids {dupes[:5]}: every question needs its own id")
    return FeatureBag(path, storage, events, answers, ftopic, qtopic, atopic)


def iter_messages(path: str | Path) -> Iterator[tuple[str, str, int, bytes]]:
    """Every message of a bag as (topic, msgtype, log time ns, CDR bytes), in log-time order."""
    reader = _open(path)
    try:
        for conn, t_ns, raw in reader.messages():
            yield conn.topic, conn.msgtype, t_ns, bytes(raw)
    finally:
        reader.close()


class BagWriter:
    """A rosbag2 directory (``metadata.yaml`` + one ``.mcap`` or ``.db3``) written from CDR bytes.

    Connections are added on first use of a topic, with the definition and RIHS01 hash from the typestore.
    Use as a context manager, or call :meth:`close`; an exception inside the ``with`` block still closes the
    bag so that what was recorded stays readable.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"output bag {str(self.path)!r} already exists")
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.count = 0

    def write(self, topic: str, msgtype: str, t_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised message at log time ``t_ns``."""
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic!r} already carries {conn.msgtype}, not {msgtype}")
        self._writer.write(conn, int(t_ns), bytes(data))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundBagWriter:
    """A :class:`BagWriter` owned by one thread, fed through a queue: ``write`` may be called from any thread.

    sqlite3 connections belong to the thread that made them, and a multi-threaded executor runs callbacks on
    several; a writer thread also keeps disk I/O out of the callbacks. ``close`` drains the queue, closes the
    bag and re-raises the first write error, if any.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        import queue
        import threading

        self.path = Path(path)
        self.storage = storage
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self.count = 0
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            writer = BagWriter(self.path, self.storage)
        except BaseException as exc:  # handed to the constructor's caller
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while (item := self._queue.get()) is not None:
                if self._error is None:
                    try:
                        writer.write(*item)
                        self.count += 1
                    except Exception as exc:  # keep draining; close() reports it
                        self._error = exc
        finally:
            writer.close()

    def write(self, topic: str, msgtype: str, t_ns: int, data: bytes | memoryview) -> None:
        """Queue one serialised message."""
        if not self._thread.is_alive():
            raise RuntimeError(f"bag writer for {str(self.path)!r} is closed")
        self._queue.put((topic, msgtype, int(t_ns), bytes(data)))

    def close(self) -> None:
        """Write what is queued, close the bag; raise the first write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
