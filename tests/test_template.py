"""The workflow template (import two half-maps -> DeepEMhancer), resolved and run headless."""

import os

from deepemhancer.tests.common import VOXEL
from deepemhancer.tests.test_protocol import DeepEMhancerTestBase
from pwem import Domain

TEMPLATE = "deepemhancer_halfmaps"


def resolvePluginTemplate(pluginName, templateName, **aliasValues):
    """What `scipion3 template <plugin>-<name> alias=value ... --nogui` does: fill the ~fields~ and
    return the path of the resulting workflow JSON (a mkstemp file: remove it)."""
    plugin = Domain.getPluginModule(pluginName)._pluginInstance
    template = {t.name: t for t in plugin.getTemplates()}[templateName]
    template.replaceEnvVariables()
    template.parseContent()
    for alias, value in aliasValues.items():
        if template.setParamValue(alias, str(value)) < 1:
            raise AssertionError("template field %s not set" % alias)
    return template.createTemplateFile()


class TestDeepEMhancerTemplate(DeepEMhancerTestBase):
    def test_template_runs_headless(self):
        wf = resolvePluginTemplate("deepemhancer", TEMPLATE, half1=self.half1, half2=self.half2,
                                   sampling=VOXEL, model=1, use_gpu="false")
        try:
            prots = self.proj.loadProtocols(wf)
        finally:
            os.remove(wf)
        self.assertEqual([p.getClassName() for p in prots.values()],
                         ["ProtImportVolumes", "ProtImportVolumes", "ProtDeepEMhancer"])
        for prot in prots.values():
            self.launchProtocol(prot)
        prot = prots["4"]
        self.assertFalse(prot.useGpu.get())
        self.assertEqual(prot.getModelName(), "wideTarget")
        self.assertAlmostEqual(prot.outputVolume.getSamplingRate(), VOXEL)
        self.assertEqual(prot.outputVolume.getDim(), prots["2"].outputVolume.getDim())
