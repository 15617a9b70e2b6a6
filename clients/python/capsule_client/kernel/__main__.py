"""`python -m capsule_client.kernel -f CONNECTION_FILE`: what the kernelspec starts."""
from ipykernel.kernelapp import IPKernelApp

from .kernel import CapsuleKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=CapsuleKernel)
