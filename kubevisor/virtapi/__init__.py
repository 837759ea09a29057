"""virt-api's REST side: the `subresources.kubevirt.io/v1` group, served in-process by the apiserver."""
