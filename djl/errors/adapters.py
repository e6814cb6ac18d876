"""The adapter API's refusals (spec §2.10)."""

from __future__ import annotations

from djl.errors.management import BadRequest


class AdapterError(BadRequest):
    """The adapter API's refusals (spec §2.10), with DJL's wording and codes."""

    @classmethod
    def parameter_required(cls, name: str) -> AdapterError:
        return cls(f"The parameter {name} is required")

    @classmethod
    def lora_disabled(cls) -> AdapterError:
        return cls("LoRA is not enabled.")

    @classmethod
    def needs_prefix(cls) -> AdapterError:
        return cls("The adapter must be prefixed with a model unless there is only a single "
                   "startup model used.")

    @classmethod
    def not_a_model(cls, name: str) -> AdapterError:
        return cls(f"The worker {name} is not a model")

    @classmethod
    def model_not_found(cls, name: str) -> AdapterError:
        return cls(f"The model {name} was not found", status=404)

    @classmethod
    def not_found(cls, name: str) -> AdapterError:
        return cls(f"The adapter {name} was not found", status=404)

    @classmethod
    def url_source(cls) -> AdapterError:
        err = cls("URL adapters are not currently supported", status=409)
        err.type = "IllegalArgumentException"
        return err

    @classmethod
    def not_python(cls) -> AdapterError:
        err = cls("Adapters are only currently supported for Python models", status=409)
        err.type = "IllegalArgumentException"
        return err

    @classmethod
    def already_registered(cls, name: str) -> AdapterError:
        err = cls(f"The adapter {name} has already been registered", status=409)
        err.type = "IllegalArgumentException"
        return err

    @classmethod
    def not_registered(cls, name: str) -> AdapterError:
        """An inference request selected an adapter its model has not registered: DJL's
        424, here with a JSON body naming it."""
        return cls(f"The adapter {name} has not been registered", status=424)
