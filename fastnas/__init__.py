"""fastnas: evolutionary one-shot neural architecture search for image classification.

Front doors (plain imports, no side effects):
  fastnas.config.load_config      YAML + key=value overrides -> validated dataclasses
  fastnas.space.SearchSpace       architectures, sample/mutate/crossover, exact cost model
  fastnas.supernet.SuperNet       weight-sharing supernet, forward(x, arch), subnet(arch)
"""

__version__ = "0.1.0"
