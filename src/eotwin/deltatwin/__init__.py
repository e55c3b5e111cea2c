"""DeltaTwin components: the manifest / workflow model, a validator, and an offline runner.

Layers: ``schema`` (facts and the JSON schema), ``manifest`` (typed models, loading), ``graph`` and
``command`` (pure), ``validate`` (findings), ``envs`` (Python environments), ``runner`` (execution).
"""
