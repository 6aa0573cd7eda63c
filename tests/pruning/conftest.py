"""A tiny network and in-memory training data for driving pruning modifiers step by step."""

import pytest
import torch
from torch import nn

from sparsebias.core import Outputs
from sparsebias.pruning import ScoreData
from sparsebias.recipes import RecipeManager

OUTPUTS = Outputs(("y",), (("a", "b", "c"),))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class MemoryImages(torch.utils.data.Dataset):
    """What ScoreData reads from FaceImages: uint8 images, targets, and every label column."""

    def __init__(self, n=48, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, 3, (n, 1), generator=g)
        group = torch.arange(n) % 2
        self.columns = torch.cat([self.labels, group[:, None]], dim=1)
        self.column_names = ("y", "group")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def data():
    return ScoreData(MemoryImages(), OUTPUTS.loss(), batch_size=16, seed=3)


def apply_once(modifier, model, data, lr=0.0):
    """Initialise a manager with the modifier and take one optimizer step at epoch 0 with
    learning rate `lr` (0: the weights the mask was chosen on stay as they were)."""
    manager = RecipeManager([modifier])
    manager.initialize(model, epoch=0.0, score_data=data)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    wrapped = manager.modify(model, optimizer, steps_per_epoch=1)
    x, y = next(ScoreData(data.dataset, data.loss, 16, seed=99).batches(1))
    wrapped.zero_grad()
    data.loss(model(x), y).backward()
    wrapped.step()
    return manager, wrapped
