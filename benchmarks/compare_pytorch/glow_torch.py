"""A standard PyTorch Glow, written the way public ports (rosinality/glow-pytorch) write it:
ActNorm, InvConv2dLU (the weight rebuilt from its LU factors on every call, torch.inverse in
reverse), AffineCoupling with a conv net ending in a ZeroConv2d, and blocks of
squeeze -> K flows -> split with a learned conditional prior. It loads the weights of a .flow
file (read by flow_file.py) so that flowrt and PyTorch race on the same model; files outside
this standard Glow subset are rejected."""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


def _p(a):
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))


def gaussian_log_p(x, mean, log_sd):
    return -0.5 * LOG_2PI - log_sd - 0.5 * (x - mean) ** 2 / torch.exp(2 * log_sd)


def gaussian_sample(eps, mean, log_sd):
    return mean + torch.exp(log_sd) * eps


class ActNorm(nn.Module):
    def __init__(self, layer):
        super().__init__()
        c = layer["bias"].shape[0]
        self.loc = _p(layer["bias"].reshape(1, c, 1, 1))
        self.scale = _p(layer["scale"].reshape(1, c, 1, 1))

    def forward(self, x):
        _, _, h, w = x.shape
        logdet = h * w * torch.sum(torch.log(torch.abs(self.scale)))
        return self.scale * (x + self.loc), logdet

    def reverse(self, y):
        return y / self.scale - self.loc


class InvConv2dLU(nn.Module):
    def __init__(self, layer):
        super().__init__()
        if layer["form"] != 1:
            raise ValueError("only LU-form 1x1 convolutions are supported")
        c = layer["sign"].shape[0]
        p = np.zeros((c, c), np.float32)
        p[np.arange(c), layer["perm"]] = 1.0  # (P v)[i] = v[perm[i]]
        self.register_buffer("w_p", torch.from_numpy(p))
        self.register_buffer("u_mask", torch.triu(torch.ones(c, c), 1))
        self.register_buffer("l_mask", self.u_mask.T.clone())
        self.register_buffer("s_sign", torch.from_numpy(layer["sign"].copy()))
        self.register_buffer("l_eye", torch.eye(c))
        self.w_l = _p(layer["lower"])
        self.w_u = _p(layer["upper"])
        self.w_s = _p(layer["log_s"])

    def calc_weight(self):
        weight = self.w_p @ (self.w_l * self.l_mask + self.l_eye) @ (
            (self.w_u * self.u_mask) + torch.diag(self.s_sign * torch.exp(self.w_s)))
        return weight.unsqueeze(2).unsqueeze(3)

    def forward(self, x):
        _, _, h, w = x.shape
        return F.conv2d(x, self.calc_weight()), h * w * torch.sum(self.w_s)

    def reverse(self, y):
        weight = self.calc_weight()
        return F.conv2d(y, weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))


class ZeroConv2d(nn.Module):
    """glow-pytorch's output layer: pad, 3x3 conv, scale by exp(3 * scale)."""

    def __init__(self, conv, scale):
        super().__init__()
        w = conv["weight"]
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=0)
        self.conv.weight = _p(w)
        self.conv.bias = _p(conv["bias"] if conv["bias"] is not None else np.zeros(w.shape[0]))
        self.pad = w.shape[2] // 2
        self.pad_value = conv["pad_value"] if conv["padding"] == 2 else 0.0
        self.scale = _p(scale["log_scale"].reshape(1, -1, 1, 1))
        self.factor = scale["factor"]

    def forward(self, x):
        out = F.pad(x, [self.pad] * 4, value=self.pad_value)
        return self.conv(out) * torch.exp(self.scale * self.factor)


def _conv(op):
    if op["padding"] not in (1,):
        raise ValueError("only zero-padded hidden convolutions are supported")
    w = op["weight"]
    c = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
    c.weight = _p(w)
    c.bias = _p(op["bias"] if op["bias"] is not None else np.zeros(w.shape[0]))
    return c


def _net(ops):
    """conv3x3 -> ReLU -> conv1x1 -> ReLU -> ZeroConv2d, as stored in the file."""
    kinds = [o["op"] for o in ops]
    if kinds != ["conv", "relu", "conv", "relu", "conv", "output_scale"]:
        raise ValueError("unsupported coupling net %s" % kinds)
    return nn.Sequential(_conv(ops[0]), nn.ReLU(inplace=True), _conv(ops[2]),
                         nn.ReLU(inplace=True), ZeroConv2d(ops[4], ops[5]))


class AffineCoupling(nn.Module):
    def __init__(self, layer):
        super().__init__()
        if layer["conditioning"] != 1:
            raise ValueError("only first-half conditioning is supported")
        self.affine = layer["type"] == 2
        if self.affine and (layer["split"] != 2 or layer["scale_fn"] != 1 or layer["form"] != 1):
            raise ValueError("only glow-pytorch's affine coupling is supported")
        self.scale_bias = layer["scale_bias"]
        self.net = _net(layer["net"])

    def forward(self, x):
        in_a, in_b = x.chunk(2, 1)
        if self.affine:
            log_s, t = self.net(in_a).chunk(2, 1)
            s = torch.sigmoid(log_s + self.scale_bias)
            out_b = (in_b + t) * s
            logdet = torch.sum(torch.log(s).view(x.shape[0], -1), 1)
        else:
            out_b = in_b + self.net(in_a)
            logdet = 0
        return torch.cat([in_a, out_b], 1), logdet

    def reverse(self, y):
        out_a, out_b = y.chunk(2, 1)
        if self.affine:
            log_s, t = self.net(out_a).chunk(2, 1)
            s = torch.sigmoid(log_s + self.scale_bias)
            in_b = out_b / s - t
        else:
            in_b = out_b - self.net(out_a)
        return torch.cat([out_a, in_b], 1)


class Flow(nn.Module):
    def __init__(self, actnorm, invconv, coupling):
        super().__init__()
        self.actnorm = ActNorm(actnorm)
        self.invconv = InvConv2dLU(invconv)
        self.coupling = AffineCoupling(coupling)

    def forward(self, x):
        out, logdet = self.actnorm(x)
        out, det1 = self.invconv(out)
        out, det2 = self.coupling(out)
        return out, logdet + det1 + det2

    def reverse(self, y):
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


def squeeze(x):
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.contiguous().view(b, c * 4, h // 2, w // 2)


def unsqueeze(x):
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.contiguous().view(b, c // 4, h * 2, w * 2)


class Block(nn.Module):
    """squeeze -> flows -> split (with a learned conditional prior) or the learned top prior."""

    def __init__(self, flows, split, top):
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.split = split is not None
        if self.split:
            if split["leaving"] != 2 or split["layout"] != 1:
                raise ValueError("only glow-pytorch's split is supported")
            self.prior = ZeroConv2d(split["prior"][0], split["prior"][1])
        else:
            if top["prior_kind"] != 2 or top["class_offsets"] is not None:
                raise ValueError("only an unconditional learned top prior is supported")
            self.mean = _p(top["mean"][None])
            self.log_sd = _p(top["log_std"][None])

    def forward(self, x):
        out = squeeze(x)
        logdet = 0
        for flow in self.flows:
            out, det = flow(out)
            logdet = logdet + det
        if self.split:
            out, z_new = out.chunk(2, 1)
            mean, log_sd = self.prior(out).chunk(2, 1)
        else:
            z_new, mean, log_sd = out, self.mean, self.log_sd
        log_p = gaussian_log_p(z_new, mean, log_sd).view(x.shape[0], -1).sum(1)
        return out, logdet, log_p, z_new

    def reverse(self, out, eps):
        """out: the next block's result (None for the top); eps: this block's noise, already
        multiplied by the temperature."""
        if self.split:
            mean, log_sd = self.prior(out).chunk(2, 1)
            x = torch.cat([out, gaussian_sample(eps, mean, log_sd)], 1)
        else:
            x = gaussian_sample(eps, self.mean, self.log_sd)
        for flow in self.flows[::-1]:
            x = flow.reverse(x)
        return unsqueeze(x)


class Glow(nn.Module):
    def __init__(self, model):
        super().__init__()
        layers = model["layers"]
        blocks, i = [], 0
        while i < len(layers):
            if layers[i]["kind"] != "squeeze" or layers[i]["order"] != 1:
                raise ValueError("expected a channel-major squeeze at layer %d" % i)
            i += 1
            flows = []
            while layers[i]["kind"] == "actnorm":
                flows.append(Flow(layers[i], layers[i + 1], layers[i + 2]))
                i += 3
            last = layers[i]
            i += 1
            blocks.append(Block(flows, last if last["kind"] == "split" else None,
                                last if last["kind"] == "top" else None))
        self.blocks = nn.ModuleList(blocks)
        self.image = model["image"]

    def forward(self, x):
        """Returns log p(x) per image (nats) and the latents of every block."""
        log_p_sum, logdet, out, zs = 0, 0, x, []
        for block in self.blocks:
            out, det, log_p, z_new = block(out)
            zs.append(z_new)
            logdet = logdet + det
            log_p_sum = log_p_sum + log_p
        return log_p_sum + logdet, zs

    def latent_shapes(self, batch):
        c, h, w, _ = self.image
        shapes = []
        for block in self.blocks:
            c, h, w = c * 4, h // 2, w // 2
            if block.split:
                c //= 2
            shapes.append((batch, c, h, w))
        return shapes

    def reverse(self, eps_list):
        out = None
        for block, eps in zip(self.blocks[::-1], eps_list[::-1]):
            out = block.reverse(out, eps)
        return out
