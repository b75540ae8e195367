"""fastnas: evolutionary one-shot neural architecture search for image classification.

Front doors (plain imports, no side effects):
  fastnas.config.load_config      YAML + key=value overrides -> validated dataclasses
  fastnas.spaces.build_space      the configured search space (mbconv | nb201): architectures,
                                  sample/mutate/crossover, exact cost model, supernet(), subnet(arch)
"""

__version__ = "0.1.0"
