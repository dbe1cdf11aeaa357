"""ProtDeepEMhancer through Scipion's queue system: a SLURM host in hosts.conf, a stand-in `sbatch`
that records the submission, the generated submit script checked, then run as SLURM would run it."""

import os
import stat
import subprocess
import tempfile

from deepemhancer.protocols import ProtDeepEMhancer
from deepemhancer.tests.common import VOXEL, TestWeightsMixin, makeHalfMaps
from pwem.protocols import ProtImportVolumes
from pyworkflow.project import Manager
from pyworkflow.tests import BaseTest

HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = SLURM
MANDATORY = False
SUBMIT_COMMAND = {sbatch} %_(JOB_SCRIPT)s
SUBMIT_TEMPLATE = #!/bin/bash
    #SBATCH --job-name=%_(JOB_NAME)s
    #SBATCH --output=%_(JOB_LOGS)s.out
    #SBATCH --error=%_(JOB_LOGS)s.err
    #SBATCH --partition=%_(JOB_QUEUE)s
    #SBATCH --ntasks=%_(JOB_NODES)d
    #SBATCH --cpus-per-task=%_(JOB_THREADS)d
    #SBATCH --mem=%_(JOB_MEMORY)sM
    #SBATCH --time=%_(JOB_TIME)s:00:00
    #SBATCH --gres=gpu:%_(GPU_COUNT)s
    %_(JOB_COMMAND)s
CANCEL_COMMAND = scancel %_(JOB_ID)s
CHECK_COMMAND = squeue -h -j %_(JOB_ID)s
JOB_DONE_REGEX =
QUEUES = {{"cpu": [["JOB_MEMORY", "4096", "Memory (MB)", "memory"], ["JOB_TIME", "1", "Time (hours)", "time"]]}}
QUEUES_DEFAULT = {{"JOB_GPUS": "0"}}
"""

FAKE_SBATCH = """#!/bin/sh
# stand-in for SLURM's sbatch: keep the script, answer like sbatch
cp "$1" "{record}"
echo "Submitted batch job 4242"
"""


class TestDeepEMhancerQueue(TestWeightsMixin, BaseTest):
    @classmethod
    def setUpClass(cls):
        tmp = tempfile.mkdtemp(prefix="deepemhancer_slurm_")
        cls.record = os.path.join(tmp, "submitted.job")
        sbatch = os.path.join(tmp, "sbatch")
        with open(sbatch, "w") as f:
            f.write(FAKE_SBATCH.format(record=cls.record))
        os.chmod(sbatch, os.stat(sbatch).st_mode | stat.S_IEXEC)
        hosts = os.path.join(tmp, "hosts.conf")
        with open(hosts, "w") as f:
            f.write(HOSTS_CONF.format(sbatch=sbatch))
        cls.projName = cls.__name__
        cls.proj = Manager().createProject(cls.projName, hostsConf=hosts)
        cls.outputPath = cls.proj.path
        os.chdir(cls.outputPath)
        cls.half1, cls.half2 = makeHalfMaps(os.path.join(cls.proj.path, "inputData"))
        cls.useTestWeights()

    def refresh(self, prot):
        """Reload the protocol's status and outputs from its run database."""
        self.proj._updateProtocol(prot)
        return prot

    def test_slurm_submit_script(self):
        imps = []
        for path in (self.half1, self.half2):
            imp = self.newProtocol(ProtImportVolumes, filesPath=path, samplingRate=VOXEL)
            self.launchProtocol(imp)  # locally (no queue)
            imps.append(imp)
        prot = self.newProtocol(ProtDeepEMhancer, useHalfMaps=True, halfMapsAttached=False,
                                inputHalf1=imps[0].outputVolume,
                                inputHalf2=imps[1].outputVolume, useGpu=False, numberOfThreads=2)
        prot._useQueue.set(True)
        prot.setQueueParams(["cpu", {"JOB_MEMORY": "8192", "JOB_TIME": "2"}])
        self.assertEqual(self.proj.getHostConfig(prot.getHostName()).getQueueSystem().getName(), "SLURM")
        self.proj.launchProtocol(prot, wait=False)
        prot = self.refresh(prot)
        self.assertTrue(prot.useQueueForProtocol())
        self.assertEqual(str(prot.getJobIds()[0]), "4242", prot.getErrorMessage())

        with open(self.record) as f:
            script = f.read()
        for line in ("#SBATCH --partition=cpu", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8192M",
                     "#SBATCH --time=2:00:00", "#SBATCH --job-name=%s" % prot.strId()):
            self.assertIn(line, script)
        self.assertIn("pw_protocol_run.py", script)
        self.assertIn(self.proj.path, script)

        # what the SLURM node does: run the submitted script
        res = subprocess.run(["bash", self.record], capture_output=True, text=True, timeout=600)
        self.assertEqual(res.returncode, 0, res.stderr[-3000:])
        prot = self.refresh(prot)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertEqual(prot.outputVolume.getDim(), imps[0].outputVolume.getDim())
        self.assertTrue(os.path.exists(prot.getOutputPath()))
