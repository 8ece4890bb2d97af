"""Bundled data (checksums, shapes, known values), the CSV and text readers, and the downloaders
against archives the tests build themselves (no network)."""
import gzip
import hashlib
import io
import re
import tarfile
from importlib import resources

import numpy as np
import pytest

from elman.data import datasets, download
from elman.data import (download_imdb, download_tiny_shakespeare, load_airline_passengers,
                        load_hamlet, load_movie_reviews, load_seattle_weather, read_csv,
                        read_text)

FILES = resources.files("elman.data") / "files"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- provenance

def _provenance_table():
    """{file: (bytes, sha256)} from the first table of PROVENANCE.md."""
    text = (FILES / "PROVENANCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", text, re.MULTILINE)
    return {name: (int(size), sha) for name, size, sha in rows}, text


def test_provenance_lists_every_bundled_file_with_its_sha256():
    table, _ = _provenance_table()
    shipped = {p.name for p in FILES.iterdir() if p.name != "PROVENANCE.md"}
    assert set(table) == shipped == {"seattle-weather.csv", "hamlet.txt.gz",
                                     "airline-passengers.csv",
                                     "movieReviewSnippets_GroundTruth.txt.gz",
                                     "cmudict.dict.gz", "cmudict.LICENSE"}
    for name, (size, sha) in table.items():
        data = (FILES / name).read_bytes()
        assert len(data) == size, name
        assert _sha256(data) == sha, f"{name} changed: update PROVENANCE.md or restore the file"


def test_provenance_gives_the_decompressed_sha256_of_each_gz():
    table, text = _provenance_table()
    for name in table:
        if name.endswith(".gz"):
            content = gzip.decompress((FILES / name).read_bytes())
            assert _sha256(content) in text, name


# --------------------------------------------------------------------------- bundled loaders

def test_cmudict():
    lexicon = datasets.load_cmudict()
    assert len(lexicon) == 126052
    assert lexicon["read"] == [("R", "EH", "D"), ("R", "IY", "D")]    # read, read(2)
    assert lexicon["aalborg"][0] == ("AO", "L", "B", "AO", "R", "G")  # the comment dropped
    phonemes = {p for prons in lexicon.values() for pron in prons for p in pron}
    assert len(phonemes) == 39 and not any(c.isdigit() for p in phonemes for c in p)
    assert datasets.load_cmudict(stress=True)["read"][0] == ("R", "EH1", "D")
    assert "Carnegie Mellon" in (FILES / "cmudict.LICENSE").read_text()


def test_seattle_weather():
    w = load_seattle_weather()
    assert len(w) == 1461 and w.values.shape == (1461, 4) and w.values.dtype == np.float64
    assert w.columns == ["precipitation", "temp_max", "temp_min", "wind"]
    assert w.dates.dtype == np.dtype("datetime64[D]")
    assert w.dates[0] == np.datetime64("2012-01-01") and w.dates[-1] == np.datetime64("2015-12-31")
    assert np.all(np.diff(w.dates) == np.timedelta64(1, "D"))      # no gaps, no repeats
    assert set(w.text["weather"]) == {"drizzle", "fog", "rain", "snow", "sun"}
    assert len(w.text["weather"]) == 1461
    assert np.isfinite(w.values).all()
    assert (w.column("temp_max") >= w.column("temp_min")).all()
    # first row of the file: 2012/01/01,0.0,12.8,5.0,4.7,drizzle
    assert w.values[0].tolist() == [0.0, 12.8, 5.0, 4.7]
    assert w.line_numbers[0] == 2 and w.line_numbers[-1] == 1462


def test_movie_snippets_raw_and_labelled():
    ids, scores, texts = datasets._movie_snippets()
    assert len(ids) == len(scores) == len(texts) == 10605
    assert ids.tolist() == list(range(1, 10606))
    assert int((scores == 0).sum()) == 37
    assert not any("\r" in t or "\t" in t for t in texts)
    assert texts[0].startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert scores[0] == pytest.approx(2.26666666667)

    texts2, labels, scores2 = load_movie_reviews()
    assert len(texts2) == len(labels) == len(scores2) == 10605 - 37
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    np.testing.assert_array_equal(labels, (scores2 > 0).astype(int))
    assert (scores2 != 0).all() and np.abs(scores2).max() <= 4
    assert texts2[2] == "Effective but too tepid biopic" and labels[2] == 0   # score -0.6


def test_hamlet():
    text = load_hamlet()
    assert len(text) == 175176
    assert "To be, or not to be" in text and "\r" not in text
    assert text.lstrip().startswith("The Tragedy of Hamlet, Prince of Denmark")


def test_airline_passengers():
    months, values = load_airline_passengers()
    assert months.shape == values.shape == (144,)
    assert months.dtype == np.dtype("datetime64[M]") and values.dtype == np.float64
    assert months[0] == np.datetime64("1949-01") and months[-1] == np.datetime64("1960-12")
    assert np.all(np.diff(months) == np.timedelta64(1, "M"))
    assert values[0] == 112 and values[-1] == 432 and values.sum() == 40363
    assert values.max() == 622                                        # July 1960


# --------------------------------------------------------------------------- read_csv

def _write(tmp_path, text, name="data.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


CSV = "date,temp,wind,sky\n2020-01-01,3.5,2,sun\n2020-01-02,NA,4,rain\n2020-01-03,5,,fog\n"


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_read_csv_empty_file(tmp_path, content):
    with pytest.raises(ValueError, match=r"data\.csv: the file is empty; expected a header"):
        read_csv(_write(tmp_path, content))


def test_read_csv_header_only(tmp_path):
    with pytest.raises(ValueError, match="has a header but no data rows"):
        read_csv(_write(tmp_path, "a,b\n"))


def test_read_csv_unknown_column_lists_the_available_ones(tmp_path):
    path = _write(tmp_path, CSV)
    with pytest.raises(ValueError, match=r"no column named 'tmep' \(did you mean 'temp'\?\); "
                                         r"the columns are: date, temp, wind, sky"):
        read_csv(path, columns=["tmep"], date_column="date")
    with pytest.raises(ValueError, match="no column named 'day'"):
        read_csv(path, date_column="day")
    with pytest.raises(ValueError, match="no column named 'label'"):
        read_csv(path, text_columns=["label"])


def test_read_csv_missing_error_names_the_first_missing_cell(tmp_path):
    path = _write(tmp_path, CSV)
    with pytest.raises(ValueError) as err:
        read_csv(path, date_column="date", text_columns=["sky"])
    msg = str(err.value)
    assert "line 3, column 'temp': missing value ('NA')" in msg
    assert "2 missing cells in all (temp: 1, wind: 1)" in msg
    assert "missing='drop'" in msg and "missing='ffill'" in msg
    # only the requested columns count: 'wind' alone has its gap on line 4
    with pytest.raises(ValueError, match=r"line 4, column 'wind': missing value \(''\); 1 missing"):
        read_csv(path, columns=["wind"])


def test_read_csv_missing_drop_and_ffill(tmp_path):
    path = _write(tmp_path, CSV)
    t = read_csv(path, date_column="date", text_columns=["sky"], missing="drop")
    assert t.values.tolist() == [[3.5, 2.0]] and t.text["sky"] == ["sun"]
    assert t.dates.tolist() == [np.datetime64("2020-01-01").item()]
    assert t.line_numbers.tolist() == [2]

    t = read_csv(path, date_column="date", text_columns=["sky"], missing="ffill")
    assert t.values.tolist() == [[3.5, 2.0], [3.5, 4.0], [5.0, 4.0]]
    assert t.text["sky"] == ["sun", "rain", "fog"] and len(t.dates) == 3

    # a column of only the first row present still fills
    t = read_csv(_write(tmp_path, "x\n1\nnan\nN/A\nnull\n"), missing="ffill")
    assert t.values[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_read_csv_ffill_cannot_fill_a_leading_gap_or_a_date(tmp_path):
    with pytest.raises(ValueError, match=r"line 2, column 'x': missing value with no earlier"):
        read_csv(_write(tmp_path, "x\nNA\n2\n"), missing="ffill")
    path = _write(tmp_path, "d,x\n2020-01-01,1\n,2\n2020-01-03,3\n")
    with pytest.raises(ValueError, match=r"line 3, column 'd': missing date"):
        read_csv(path, date_column="d", missing="ffill")
    with pytest.raises(ValueError, match=r"line 3, column 'd': missing value"):
        read_csv(path, date_column="d")
    assert read_csv(path, date_column="d", missing="drop").values[:, 0].tolist() == [1.0, 3.0]


def test_read_csv_drop_everything_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="every row has a missing value"):
        read_csv(_write(tmp_path, "x,y\n1,\n,2\n"), missing="drop")


def test_read_csv_non_numeric_names_row_and_column(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n3,4x\n")
    with pytest.raises(ValueError, match=r"data\.csv, line 3, column 'b': expected a number, "
                                         r"got '4x' \(if 'b' holds text, pass text_columns"):
        read_csv(path)
    # a text column left out of `columns=` is not parsed at all
    t = read_csv(_write(tmp_path, "a,label\n1,pos\n2,neg\n"), columns=["a"])
    assert t.values[:, 0].tolist() == [1.0, 2.0] and t.text == {}


def test_read_csv_shapes_order_and_formats(tmp_path):
    text = ('\ufeffid,"note, quoted",value\r\n'
            '1,"hello, world",1e3\r\n'
            '\r\n'                                   # a blank line is skipped
            '2,"two\nlines", -2.5 \r\n')
    t = read_csv(_write(tmp_path, text), columns=["value", "id"], text_columns=["note, quoted"])
    assert t.columns == ["value", "id"]
    assert t.values.tolist() == [[1000.0, 1.0], [-2.5, 2.0]]
    assert t.text["note, quoted"] == ["hello, world", "two\nlines"]
    assert t.line_numbers.tolist() == [2, 5]             # the quoted newline spans lines 4-5
    np.testing.assert_array_equal(t.column("id"), [1.0, 2.0])
    with pytest.raises(KeyError, match="numeric columns are: value, id"):
        t.column("note, quoted")


def test_read_csv_semicolons_and_no_numeric_columns(tmp_path):
    t = read_csv(_write(tmp_path, "a;b\n1,5;x\n"), columns=[], text_columns=["a", "b"],
                 delimiter=";")
    assert t.values.shape == (1, 0) and t.text == {"a": ["1,5"], "b": ["x"]}


def test_read_csv_dates(tmp_path):
    t = read_csv(_write(tmp_path, "m,x\n1949/01,1\n1949-02,2\n"), date_column="m")
    assert t.dates.dtype == np.dtype("datetime64[M]")
    t = read_csv(_write(tmp_path, "t,x\n2020-01-01 10:00,1\n2020-01-01T11:30:15,2\n"),
                 date_column="t")
    assert t.dates[1] - t.dates[0] == np.timedelta64(5415, "s")
    for bad in ["20200101", "01/02/2020", "2020-13-01", "yesterday"]:
        with pytest.raises(ValueError, match=rf"line 2, column 't': cannot read '{bad}' as a date"):
            read_csv(_write(tmp_path, f"t,x\n{bad},1\n"), date_column="t")


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n3\n", r"line 3: 1 fields, but the header has 2"),
    ("a,b,a\n1,2,3\n", r"the header names column 'a' twice"),
    ("a,,c\n1,2,3\n", r"header column 2 has no name"),
])
def test_read_csv_malformed(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_csv(_write(tmp_path, text))


def test_read_csv_argument_errors(tmp_path):
    path = _write(tmp_path, CSV)
    with pytest.raises(TypeError, match=r"columns must be a list of column names, got the string "
                                        r"'temp'; write columns=\['temp'\]"):
        read_csv(path, columns="temp")
    with pytest.raises(TypeError, match="text_columns must be a list"):
        read_csv(path, text_columns="sky")
    with pytest.raises(ValueError, match="missing must be one of 'error', 'drop', 'ffill'"):
        read_csv(path, missing="zero")
    with pytest.raises(ValueError, match="asked for both as numeric"):
        read_csv(path, columns=["temp", "sky"], text_columns=["sky"])
    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "nope.csv")


def test_read_csv_undecodable_bytes(tmp_path):
    path = _write(tmp_path, "city,x\nM\xfcnchen,1\n".encode("latin-1"), mode="wb")
    with pytest.raises(ValueError, match=r"not valid utf-8 text: byte offset 8 \(line 2\) holds "
                                         r"0xfc.*encoding='latin-1'"):
        read_csv(path)
    t = read_csv(path, text_columns=["city"], encoding="latin-1")
    assert t.text["city"] == ["München"]


# --------------------------------------------------------------------------- read_text

def test_read_text(tmp_path):
    path = _write(tmp_path, "\ufeffline one\r\nline two\rthree\n", name="t.txt")
    assert read_text(path) == "line one\nline two\nthree\n"
    with pytest.raises(ValueError, match="t.txt: the file is empty"):
        read_text(_write(tmp_path, "", name="t.txt"))


def test_read_text_undecodable_names_offset_and_suggests_encoding(tmp_path):
    path = _write(tmp_path, b"abc\ndef \xe9t\xe9\n", name="t.txt", mode="wb")
    with pytest.raises(ValueError) as err:
        read_text(path)
    msg = str(err.value)
    assert "byte offset 8 (line 2)" in msg and "0xe9" in msg and "encoding='latin-1'" in msg
    assert read_text(path, encoding="latin-1") == "abc\ndef été\n"
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        read_text(path, encoding="klingon")


# --------------------------------------------------------------------------- downloaders

REVIEWS = {
    "aclImdb/train/pos/3_9.txt": "Great film.<br /><br />Loved it.",
    "aclImdb/train/pos/10_8.txt": "A joy.",
    "aclImdb/train/neg/0_1.txt": "Dull.",
    "aclImdb/test/pos/1_10.txt": "Superb \u2013 truly.",
    "aclImdb/test/neg/2_2.txt": "Awful<br/>and long.",
    "aclImdb/test/neg/1_3.txt": "Meh.",
}
DECOYS = {
    "aclImdb/train/unsup/5_0.txt": "unlabelled",
    "aclImdb/README": "readme",
    "aclImdb/train/labeledBow.feat": "0:1",
    "../evil_1.txt": "outside",
    "aclImdb/train/pos/../../../evil_2.txt": "outside",
}


def _tar_gz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_imdb(tmp_path):
    archive = _tar_gz(tmp_path / "fake.tar.gz", {**DECOYS, **REVIEWS})
    return archive, _sha256(archive.read_bytes())


def _no_temp_files(cache):
    return not any(p.name.endswith(".part") for p in cache.iterdir()) if cache.exists() else True


def test_download_imdb_parses_a_local_archive_and_caches_it(tmp_path, fake_imdb):
    archive, sha = fake_imdb
    cache = tmp_path / "cache"
    train_x, train_y, test_x, test_y = download_imdb(cache, url=archive.as_uri(), sha256=sha,
                                                     quiet=True)
    # negatives first, then positives, each by review id (3 before 10: numeric, not text order)
    assert train_x == ["Dull.", "Great film.  Loved it.", "A joy."]
    assert train_y.tolist() == [0, 1, 1] and train_y.dtype == np.int64
    assert test_x == ["Meh.", "Awful and long.", "Superb \u2013 truly."]
    assert test_y.tolist() == [0, 0, 1]
    cached = cache / "aclImdb_v1.tar.gz"
    assert cached.read_bytes() == archive.read_bytes() and _no_temp_files(cache)
    # nothing was extracted: the path-traversal decoys wrote nothing anywhere
    assert sorted(p.name for p in cache.iterdir()) == ["aclImdb_v1.tar.gz"]
    assert not list(tmp_path.rglob("evil_*"))

    # second call: served from the cache (the source is gone, so a download would fail)
    archive.unlink()
    again = download_imdb(cache, url=archive.as_uri(), sha256=sha, quiet=True)
    assert again[0] == train_x
    raw = download_imdb(cache, url=archive.as_uri(), sha256=sha, clean_html=False, quiet=True)
    assert raw[0][1] == "Great film.<br /><br />Loved it."


def test_download_wrong_checksum_deletes_the_download(tmp_path, fake_imdb):
    archive, sha = fake_imdb
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ValueError) as err:
        download_imdb(cache, url=archive.as_uri(), sha256=wrong, quiet=True)
    assert f"expected SHA-256 {wrong}, got {sha}" in str(err.value)
    assert not (cache / "aclImdb_v1.tar.gz").exists() and _no_temp_files(cache)


def test_download_corrupt_cache_is_fetched_again(tmp_path, fake_imdb):
    archive, sha = fake_imdb
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "aclImdb_v1.tar.gz").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="downloading it again"):
        train_x, *_ = download_imdb(cache, url=archive.as_uri(), sha256=sha, quiet=True)
    assert len(train_x) == 3
    assert download.sha256_file(cache / "aclImdb_v1.tar.gz") == sha


def test_download_imdb_rejects_an_archive_without_reviews(tmp_path):
    archive = _tar_gz(tmp_path / "other.tar.gz", DECOYS)
    with pytest.raises(ValueError, match=r"not an aclImdb archive: it has no aclImdb/train/neg"):
        download_imdb(tmp_path / "cache", url=archive.as_uri(),
                      sha256=_sha256(archive.read_bytes()), quiet=True)


def test_download_tiny_shakespeare_and_env_cache(tmp_path, monkeypatch):
    source = tmp_path / "input.txt"
    source.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n",
                      encoding="utf-8")
    sha = _sha256(source.read_bytes())
    monkeypatch.setenv("ELMAN_CACHE", str(tmp_path / "envcache"))
    text = download_tiny_shakespeare(url=source.as_uri(), sha256=sha.upper(), quiet=True)
    assert text.startswith("First Citizen:\n")
    assert (tmp_path / "envcache" / "tinyshakespeare.txt").is_file()


def test_default_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ELMAN_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert download.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ELMAN_CACHE")
    assert download.default_cache_dir() == tmp_path / "x" / "elman"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.default_cache_dir() == tmp_path / "home" / ".cache" / "elman"


def test_fetch_errors(tmp_path):
    missing = (tmp_path / "gone.txt").as_uri()
    with pytest.raises(ConnectionError, match=r"could not download .*gone\.txt.*save it as "
                                              r".*cache.x\.txt \(it must have SHA-256 a{64}\)"):
        download.fetch(missing, "x.txt", "a" * 64, tmp_path / "cache", quiet=True)
    assert _no_temp_files(tmp_path / "cache")
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal digits"):
        download.fetch(missing, "x.txt", "abc", tmp_path)
    with pytest.raises(ValueError, match="url must start with http://, https:// or file://"):
        download.fetch("ftp://example.org/x", "x.txt", "a" * 64, tmp_path)
    with pytest.raises(ValueError, match="filename must be a plain file name"):
        download.fetch(missing, "../x.txt", "a" * 64, tmp_path)


def test_known_hashes_are_well_formed():
    for value in (download.IMDB_SHA256, download.TINY_SHAKESPEARE_SHA256):
        assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert download.IMDB_URL.endswith("/aclImdb_v1.tar.gz")
    assert download.TINY_SHAKESPEARE_URL.endswith("/tinyshakespeare/input.txt")


def test_readers_refuse_a_fifo_without_blocking_and_name_a_directory(tmp_path):
    import os
    from elman.data.datasets import read_csv, read_text
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for reader in (read_csv, read_text):
        with pytest.raises(ValueError, match="pipe.csv: not a regular file"):
            reader(fifo)                 # opening it would block: nobody writes to it
        with pytest.raises(IsADirectoryError, match="is a directory, not a file"):
            reader(tmp_path)
