"""Pure algorithms on embeddings: embedders, k-center core sets, dataset distances, two-sample tests,
transferability estimators (LEEP, LogME, H-score, k-NN probe).

Arrays in, arrays out: nothing here touches a repository, so every function can be tested and
benchmarked on synthetic matrices and run unchanged on a worker of a distributed job.
"""
