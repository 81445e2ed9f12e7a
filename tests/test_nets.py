"""Fast checks of the denoising networks: shapes, parameter counts, gradients, time input."""

import pytest
import torch

from diffusion.nets import MLP, NETWORKS, UNet, timestep_embedding

TINY_UNET = dict(image_size=8, in_channels=1, model_channels=16, channel_mult=(1, 2),
                 num_res_blocks=1, attention_resolutions=(4,), dropout=0.0)
MNIST_UNET = dict(image_size=28, in_channels=1, model_channels=16, channel_mult=(1, 2, 2),
                  num_res_blocks=1, attention_resolutions=(14,), dropout=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and most predictably on a shared machine) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(cls, seed=0, **kwargs):
    torch.manual_seed(seed)
    return cls(**kwargs)


def unzero_(model):
    """Give zero-initialised layers random weights so outputs depend on the input."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls, kwargs, x_shape, out_shape", [
    (UNet, TINY_UNET, (2, 1, 8, 8), (2, 1, 8, 8)),
    (UNet, dict(TINY_UNET, out_channels=2), (2, 1, 8, 8), (2, 2, 8, 8)),
    (UNet, MNIST_UNET, (2, 1, 28, 28), (2, 1, 28, 28)),
    (UNet, dict(TINY_UNET, in_channels=3, num_groups=32), (2, 3, 8, 8), (2, 3, 8, 8)),
    (MLP, dict(in_shape=(1, 8, 8)), (4, 1, 8, 8), (4, 1, 8, 8)),
    (MLP, dict(in_shape=(1, 8, 8), out_channels=2), (4, 1, 8, 8), (4, 2, 8, 8)),
    (MLP, dict(in_shape=(2,)), (5, 2), (5, 2)),
    (MLP, dict(in_shape=(2,), out_channels=4), (5, 2), (5, 4)),
])
def test_output_shapes(cls, kwargs, x_shape, out_shape):
    model = make(cls, **kwargs)
    x = torch.randn(x_shape)
    out = model(x, torch.rand(x_shape[0]) * 999)
    assert out.shape == out_shape and out.dtype == x.dtype


def test_registry_and_scalar_time():
    assert NETWORKS == {"unet": UNet, "mlp": MLP}
    model = unzero_(make(MLP, in_shape=(2,)))
    x = torch.randn(3, 2)
    assert torch.equal(model(x, torch.tensor(7.0)), model(x, torch.full((3,), 7.0)))


def test_unet_rejects_indivisible_size():
    with pytest.raises(ValueError):
        UNet(image_size=28, channel_mult=(1, 2, 2, 2))


def test_cifar10_parameter_count():
    model = UNet(image_size=32, in_channels=3, model_channels=128, channel_mult=(1, 2, 2, 2),
                 num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
    assert abs(n_params(model) - 35.7e6) / 35.7e6 < 0.01  # official diffusion_tf: 35,746,307


def test_mlp_parameter_count():
    assert 0.5e6 < n_params(MLP(in_shape=(1, 8, 8))) < 0.9e6


def test_output_layers_zero_initialised():
    assert not make(UNet, **TINY_UNET)(torch.randn(2, 1, 8, 8), torch.rand(2)).any()
    assert not make(MLP, in_shape=(2,))(torch.randn(2, 2), torch.rand(2)).any()


@pytest.mark.parametrize("cls, kwargs, x_shape", [
    (UNet, TINY_UNET, (4, 1, 8, 8)),
    (MLP, dict(in_shape=(1, 8, 8)), (4, 1, 8, 8)),
])
def test_gradients_reach_every_parameter(cls, kwargs, x_shape):
    model = make(cls, **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = torch.randn(x_shape), torch.rand(x_shape[0]) * 999

    def backward():
        opt.zero_grad(set_to_none=True)
        (model(x, t) - x).pow(2).mean().backward()

    backward()
    assert all(p.grad is not None for p in model.parameters())
    final = list(model.parameters())[-2:]  # weight and bias of the zero-initialised output layer
    assert all(p.grad.abs().sum() > 0 for p in final)
    for _ in range(2):  # two steps: output layer, then the zero-init convs inside blocks
        opt.step()
        backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, dead


@pytest.mark.parametrize("cls, kwargs, x_shape", [
    (UNet, TINY_UNET, (2, 1, 8, 8)),
    (MLP, dict(in_shape=(2,)), (2, 2)),
])
def test_fractional_time(cls, kwargs, x_shape):
    model = unzero_(make(cls, **kwargs)).eval()
    x = torch.randn(x_shape)
    out_int = model(x, torch.full((x_shape[0],), 10.0))
    out_frac = model(x, torch.full((x_shape[0],), 10.5))
    assert torch.isfinite(out_frac).all()
    assert not torch.allclose(out_int, out_frac)


def test_timestep_embedding():
    t = torch.tensor([0.0, 3.0, 3.5, 999.0])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (4, 16) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    assert not torch.allclose(emb[1], emb[2])
    assert timestep_embedding(t, 7).shape == (4, 7)
    assert timestep_embedding(t.double(), 8).dtype == torch.float64


@pytest.mark.parametrize("cls, kwargs, x_shape", [
    (UNet, dict(TINY_UNET, dropout=0.1), (2, 1, 8, 8)),
    (MLP, dict(in_shape=(1, 8, 8), dropout=0.1), (2, 1, 8, 8)),
])
def test_deterministic_for_fixed_seed(cls, kwargs, x_shape):
    a, b = unzero_(make(cls, seed=3, **kwargs)), unzero_(make(cls, seed=3, **kwargs))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    x, t = torch.randn(x_shape), torch.rand(x_shape[0]) * 999
    torch.manual_seed(5)
    out_a = a(x, t)
    torch.manual_seed(5)
    assert torch.equal(out_a, b(x, t))  # train mode: dropout masks follow the seed
    assert torch.equal(a.eval()(x, t), a(x, t))


def test_unet_channels_last_and_float64():
    model = unzero_(make(UNet, **TINY_UNET)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.5])
    out = model(x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(out, model(x, t), atol=1e-5)
    model_cl = model.to(memory_format=torch.channels_last)
    assert torch.allclose(model_cl(x.to(memory_format=torch.channels_last), t), model(x, t), atol=1e-5)
    assert model.double()(x.double(), t).dtype == torch.float64
