"""Sample-quality metrics: Frechet distance with the bundled digits feature net (``fd``) and the
sliced Wasserstein-2 distance for low-dimensional data (``sliced_w2``). Import the submodules."""
