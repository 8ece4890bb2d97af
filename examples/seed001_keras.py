"""Seed 001, "the simple RNN and Keras", run as written: the tutorial's Keras code with only the
imports changed (``keras.`` -> ``elman.keras.``). Everything else -- the layers, ``compile``,
``fit``, ``summary()``, ``history.history['acc']``, the plots -- is the tutorial's.

    python examples/seed001_keras.py               # real IMDB reviews (downloaded once, ~80 MB)
    python examples/seed001_keras.py --plots DIR   # save the two plots instead of showing them

The IMDB reviews come from the Stanford archive through ``elman.keras.datasets.imdb`` (cached
with a SHA-256 check; word ids ranked as Keras ranks them, see that module). An epoch of the
SimpleRNN over 20,000 reviews of 500 words took about 20 s on one busy 2-core machine with the
fast path (numba) installed, so the ten take a few minutes. The tests run the same code on a
small archive they generate (and check that its weights load into real Keras).
"""
import argparse

from elman.keras.datasets import imdb                          # was: keras.datasets
from elman.keras.layers import Dense, Embedding, SimpleRNN      # was: keras.layers
from elman.keras.models import Sequential                      # was: keras.models
from elman.keras.preprocessing import sequence                 # was: keras.preprocessing


def summaries():
    """The tutorial's model summaries: a SimpleRNN returning its last output, one returning the
    whole sequence, and four stacked."""
    model = Sequential()
    model.add(Embedding(10000, 32))
    model.add(SimpleRNN(32))
    model.summary()

    model = Sequential()
    model.add(Embedding(10000, 32))
    model.add(SimpleRNN(32, return_sequences=True))
    model.summary()

    model = Sequential()
    model.add(Embedding(10000, 32))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32))  # This last layer only returns the last outputs.
    model.summary()


def sentiment():
    """IMDB sentiment: Embedding -> SimpleRNN -> Dense(sigmoid), 10 epochs."""
    max_features = 10000  # number of words to consider as features
    maxlen = 500  # cut texts after this many words (among top max_features most common words)
    batch_size = 32  # noqa: F841 (the tutorial's; its fit uses 128)

    print('Loading data...')
    (input_train, y_train), (input_test, y_test) = imdb.load_data(num_words=max_features)
    print(len(input_train), 'train sequences')
    print(len(input_test), 'test sequences')

    print('Pad sequences (samples x time)')
    input_train = sequence.pad_sequences(input_train, maxlen=maxlen)
    input_test = sequence.pad_sequences(input_test, maxlen=maxlen)
    print('input_train shape:', input_train.shape)
    print('input_test shape:', input_test.shape)

    model = Sequential()
    model.add(Embedding(max_features, 32))
    model.add(SimpleRNN(32))
    model.add(Dense(1, activation='sigmoid'))

    model.compile(optimizer='rmsprop', loss='binary_crossentropy', metrics=['acc'])
    history = model.fit(input_train, y_train,
                        epochs=10,
                        batch_size=128,
                        validation_split=0.2)
    return model, history, (input_test, y_test)


def plot(history, out_dir=None):
    """The tutorial's two plots (training vs validation accuracy and loss)."""
    import matplotlib.pyplot as plt           # the [plot] extra

    acc = history.history['acc']
    val_acc = history.history['val_acc']
    loss = history.history['loss']
    val_loss = history.history['val_loss']

    epochs = range(1, len(acc) + 1)

    plt.plot(epochs, acc, 'bo', label='Training acc')
    plt.plot(epochs, val_acc, 'b', label='Validation acc')
    plt.title('Training and validation accuracy')
    plt.legend()
    if out_dir:
        plt.savefig(f"{out_dir}/accuracy.png")

    plt.figure()

    plt.plot(epochs, loss, 'bo', label='Training loss')
    plt.plot(epochs, val_loss, 'b', label='Validation loss')
    plt.title('Training and validation loss')
    plt.legend()
    if out_dir:
        plt.savefig(f"{out_dir}/loss.png")
        plt.close("all")
    else:
        plt.show()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plots", metavar="DIR", help="save the plots in DIR, don't show them")
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    args = parser.parse_args(argv)
    summaries()
    model, history, (input_test, y_test) = sentiment()
    print("test loss, test acc:", model.evaluate(input_test, y_test, verbose=0))
    if not args.no_plots:
        plot(history, args.plots)
    return {"model": model, "history": history, "test": (input_test, y_test)}


if __name__ == "__main__":
    main()
