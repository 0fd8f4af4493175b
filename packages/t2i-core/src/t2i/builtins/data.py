"""The core's built-in data sets, registered through the same hook as any plugin's."""

from __future__ import annotations

from t2i.data.coco import Coco, CocoConfig
from t2i.data.folder import Folder, FolderConfig
from t2i.data.shapes import Shapes, ShapesConfig
from t2i.data.stackgan import Cub, CubConfig, Oxford, OxfordConfig
from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_datasets(register):
    register("shapes", Shapes, config=ShapesConfig, help="Coloured shapes with exact captions, from a seed")
    register("folder", Folder, config=FolderConfig,
             help="Your images with sidecar .txt captions or a captions.jsonl / .csv manifest (--data folder:PATH)")
    register("cub", Cub, config=CubConfig,
             help="CUB-200-2011 birds in the StackGAN/AttnGAN layout, bird crop, class-disjoint splits (--data cub:PATH)")
    register("oxford", Oxford, config=OxfordConfig,
             help="Oxford-102 flowers in the StackGAN layout, class-disjoint splits (--data oxford:PATH)")
    register("coco", Coco, config=CocoConfig,
             help="MS-COCO 2014/2017 captions; train = train set, test = val set (--data coco:PATH)")
