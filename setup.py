from setuptools import find_packages, setup

setup(
    name='keras_opt_legacy',
    version='0.1.0',
    description='Optimizer toolkit for graph-mode TensorFlow 1.15 + standalone Keras 2.2.4',
    packages=find_packages(include=['keras_opt_legacy', 'keras_opt_legacy.*']),
    # The kernel library's sources: built on first use where a compiler is present.
    package_data={'keras_opt_legacy.kernels': ['*.cc', '*.h']},
    python_requires='>=3.6, <3.8',
    # TensorFlow 1.x ships as two separate distributions (tensorflow / tensorflow-gpu)
    # that both provide the `tensorflow` module. Hard-requiring one would make pip
    # install a second TF next to the other, so TF is an extra: pick [tf] or [tf-gpu].
    install_requires=[
        'keras>=2.2.4,<2.4',
        'numpy>=1.14,<1.20',
        'h5py<3',           # h5py 3 breaks Keras 2.2 model loading (str vs bytes)
        'protobuf<3.21',    # protobuf 3.21+/4.x breaks TF 1.15's generated code
    ],
    extras_require={
        'tf': ['tensorflow>=1.13,<2.0'],
        'tf-gpu': ['tensorflow-gpu>=1.13,<2.0'],
        'test': ['pytest', 'hypothesis', 'scikit-learn'],
        'plot': ['matplotlib'],
        # keras_opt_legacy.distributed. Horovod builds from source: set HOROVOD_WITH_TENSORFLOW=1
        # HOROVOD_WITH_GLOO=1 and install with --no-build-isolation (against the installed TF).
        'horovod': ['horovod>=0.21,<0.23', 'cloudpickle', 'psutil', 'pyyaml'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.6',
        'Programming Language :: Python :: 3.7',
        'Operating System :: OS Independent',
    ],
)
