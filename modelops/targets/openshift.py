"""The ``openshift`` serving target: the Kubernetes target with an ImageStream and a Route.

The image is pushed to the project's ImageStream (``serving.registry`` is the internal registry's
route) and the Deployment names it as ``<image_stream>:<tag>``, resolved by the ImageStream's local
lookup policy; the URL reported is the Route's ``https://`` host.
"""

from __future__ import annotations

from typing import Any

from modelops.targets.kubernetes import KubernetesTarget


class OpenShiftTarget(KubernetesTarget):
    name = "openshift"
    overlay = "openshift"

    def cluster_image(self, pushed: str) -> str:
        # Pulled through the ImageStream (lookupPolicy.local): the in-cluster registry name differs.
        return f"{self.config.serving.image_stream}:{pushed.rpartition(':')[2]}"

    async def _url(self, api: Any, service: str) -> str:
        route = await api.read("route.openshift.io/v1", "Route", self.namespace, service)
        host = ((route or {}).get("spec") or {}).get("host")
        return f"https://{host}" if host else await super()._url(api, service)
