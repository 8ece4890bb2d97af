"""Data preparation: sliding windows over time series, contiguous streams for stateful
training, scalers fit on training data only, and a synthetic weather series for demos and
tests."""
from .scaling import MinMaxScaler, StandardScaler
from .synthetic import synthetic_weather
from .streams import stream_windows
from .windows import chronological_split, sliding_windows

__all__ = ["StandardScaler", "MinMaxScaler", "sliding_windows", "chronological_split",
           "stream_windows", "synthetic_weather"]

# real data (bundled files, readers, downloaders) and text preprocessing
from .datasets import (Table, load_airline_passengers, load_cmudict, load_hamlet,
                       load_movie_reviews, load_seattle_weather, read_csv, read_text)
from .download import default_cache_dir, download_imdb, download_tiny_shakespeare, fetch
from .text import CharVocabulary, Vocabulary, pad_sequences, stratified_split, tokenize

__all__ += ["Table", "read_csv", "read_text", "load_seattle_weather", "load_movie_reviews",
            "load_hamlet", "load_airline_passengers", "load_cmudict", "download_imdb",
            "download_tiny_shakespeare",
            "fetch", "default_cache_dir", "tokenize", "Vocabulary", "CharVocabulary",
            "pad_sequences", "stratified_split"]
