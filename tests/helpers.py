"""Small helpers shared by tests (pytest puts tests/ on sys.path)."""
import torch


@torch.no_grad()
def randomize_bn(net: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so equality checks are not vacuous."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.normal_(1, 0.1)
            m.bias.normal_(0, 0.1)
    return net
